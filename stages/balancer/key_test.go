package balancer

import (
	"net/http/httptest"
	"testing"

	"spooky/config"
	"spooky/envelope"
)

func TestRequestKey(t *testing.T) {
	e := envelope.Get()
	defer e.Release()
	e.Request = httptest.NewRequest("GET", "https://shop.example.com/cart/items?user=u%2042&x=1", nil)
	e.Request.Header.Set("X-User-Id", "u42")
	e.Request.Header.Add("Cookie", "theme=dark; session=\"abc123\"")
	e.ClientAddr = "[2001:db8::7]:443"
	for _, tc := range []struct {
		on   config.HashOn
		want string // "" when the request has no such value
	}{
		{config.HashOn{Source: "header", Name: "X-User-Id"}, "u42"},
		{config.HashOn{Source: "header", Name: "X-Missing"}, ""},
		{config.HashOn{Source: "cookie", Name: "session"}, "abc123"},
		{config.HashOn{Source: "cookie", Name: "sess"}, ""},
		{config.HashOn{Source: "query", Name: "user"}, "u%2042"},
		{config.HashOn{Source: "query", Name: "use"}, ""},
		{config.HashOn{Source: "client_ip"}, "2001:db8::7"},
		{config.HashOn{Source: "path"}, "/cart/items"},
		{config.HashOn{Source: "authority"}, "shop.example.com"},
	} {
		key, ok := requestKey(tc.on, e, nil)
		if ok != (tc.want != "") || ok && key != HashKey(tc.want) {
			t.Errorf("%+v: key %x, %v; want the hash of %q", tc.on, key, ok, tc.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { requestKey(config.HashOn{Source: "cookie", Name: "session"}, e, nil) }); n != 0 {
		t.Errorf("%v allocations per key", n)
	}
}
