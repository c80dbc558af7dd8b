// Package api owns the HTTP surface of the broker: the public listener (the
// install callback and health checks) and the internal listener (the Connect
// services, the admin page and metrics). routes.go lists every route; one
// error mapper turns domain errors into HTTP and Connect answers. Echo stays
// in this package: echo.Context never leaves a handler.
package api
