package pool

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
)

func BenchmarkForward(b *testing.B) {
	be := startH2C(b, okHandler, 0)
	p := newPool(b, testConfig(h2cGroup("g", be.addr)))
	ctx := context.Background()

	b.ReportAllocs()
	for b.Loop() {
		e := newEnvelope(ctx, be.addr, httptest.NewRequest(http.MethodGet, "http://example.com/", nil))
		p.Handle(e)
		<-e.Done()
		e.Relay()
		if e.Status != http.StatusOK {
			b.Fatalf("finished with %d, %v", e.Status, e.Err)
		}
		e.Release()
	}
}
