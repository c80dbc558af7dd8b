DROP TABLE IF EXISTS install_events;
DROP TABLE IF EXISTS installs;
