// Command echobaseline is the bare Echo server of the cached-token
// benchmark, run as a process of its own like the broker: it answers POST
// on the GetToken route with the bytes of a file and does nothing else.
//
//	echobaseline ADDR FILE
package main

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/labstack/echo/v4"
)

func main() {
	if err := run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "echobaseline:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 3 {
		return errors.New("usage: echobaseline ADDR FILE")
	}
	answer, err := os.ReadFile(args[2])
	if err != nil {
		return err
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.POST("/irisx.broker.v1.TokenService/GetToken", func(c echo.Context) error {
		return c.JSONBlob(http.StatusOK, answer)
	})
	srv := &http.Server{Addr: args[1], Handler: e, ReadHeaderTimeout: 5 * time.Second}
	return srv.ListenAndServe()
}
