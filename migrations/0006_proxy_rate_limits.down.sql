DROP TABLE IF EXISTS proxy_rate_limits;
