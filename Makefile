# spooky — see README.md.
GO       ?= go
BIN      := bin
BACKENDS := 127.0.0.1:9001,127.0.0.1:9002

.PHONY: build run test bench clean

build:
	$(GO) build -o $(BIN)/spooky ./cmd/spooky
	$(GO) build -o $(BIN)/backend ./bench/cmd/backend
	$(GO) build -o $(BIN)/h3load ./bench/cmd/h3load

# The demo: two h2c backends and spooky on config.yaml, in the foreground.
# It sends two requests through spooky to show it serving; Ctrl-C stops all.
run: build
	@$(BIN)/backend -listen $(BACKENDS) & backends=$$!; \
	$(BIN)/spooky -config config.yaml & spooky=$$!; \
	trap 'kill $$backends $$spooky 2>/dev/null; wait' INT TERM EXIT; \
	for i in $$(seq 50); do $(BIN)/h3load -timeout 300ms https://127.0.0.1:8443/ >/dev/null 2>&1 && break; sleep 0.1; done; \
	echo "--- two requests through spooky (HTTP/3 -> h2c), round robin:"; \
	$(BIN)/h3load https://127.0.0.1:8443/; $(BIN)/h3load https://127.0.0.1:8443/; \
	echo "--- serving. Stages: curl -s 127.0.0.1:9901/debug/stages   Load: $(BIN)/h3load -d 10s https://127.0.0.1:8443/   Stop: Ctrl-C"; \
	wait $$spooky

test:
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	$(GO) test -race -count=1 -timeout 20m ./...
	$(GO) test -run '^$$' -bench . -benchtime 1x ./... >/dev/null
	.ci/fuzz

bench: build
	$(GO) build -o $(BIN)/benchrun ./bench/cmd/benchrun
	$(BIN)/benchrun $(BENCHFLAGS)
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf $(BIN)
