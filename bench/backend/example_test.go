package backend_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"spooky/bench/backend"
)

func ExampleHandler() {
	srv := httptest.NewServer(backend.Handler("b1"))
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/anything")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Printf("%s %q", resp.Header.Get("X-Backend"), body)
	// Output: b1 "hello from b1\n"
}
