package api

// InflatedBytes exposes the decompression counter to the api_test package.
func InflatedBytes() int64 { return inflatedBytes.Load() }
