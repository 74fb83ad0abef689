package backend

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestInFlightCountsAndResets(t *testing.T) {
	var g InFlight
	release := make(chan struct{})
	arrived := make(chan struct{})
	h := g.Wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		arrived <- struct{}{}
		<-release
	}))
	get := func(target string) InFlightReport {
		t.Helper()
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, target, nil))
		var rep InFlightReport
		if err := json.Unmarshal(w.Body.Bytes(), &rep); err != nil {
			t.Fatalf("%s: %v: %q", target, err, w.Body.String())
		}
		return rep
	}

	done := make(chan struct{})
	for range 3 {
		go func() {
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/slow", nil))
			done <- struct{}{}
		}()
		<-arrived
	}
	// The report itself is not counted.
	if got := get(InFlightPath); got != (InFlightReport{Now: 3, Peak: 3}) {
		t.Errorf("with 3 held: %+v, want now 3, peak 3", got)
	}
	release <- struct{}{}
	<-done
	// A reset answers with what it found, then restarts the peak from now.
	if got := get(InFlightPath + "?reset=1"); got != (InFlightReport{Now: 2, Peak: 3}) {
		t.Errorf("after one finished: %+v, want now 2, peak 3", got)
	}
	close(release)
	<-done
	<-done
	if got := get(InFlightPath); got != (InFlightReport{Now: 0, Peak: 2}) {
		t.Errorf("after the reset and the rest finished: %+v, want now 0, peak 2", got)
	}
}
