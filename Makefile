# The two quick-start commands: `make demo` and `make test`. Both bootstrap first.
CARGO ?= cargo
GUEST_TARGET_DIR := $(CURDIR)/target/guests
GUEST_BUILD := CARGO_TARGET_DIR=$(GUEST_TARGET_DIR) $(CARGO) build --release --target wasm32-wasip2

# Go from the project venv, offline: Go handlers use the standard library only.
GO := $(CURDIR)/.venv/bin/go
GO_ENV := GOPROXY=off GOTOOLCHAIN=local

.PHONY: demo test bootstrap guests go-guests py-guests js-guests build check

bootstrap:
	@./scripts/bootstrap.sh

## Build the example and test guests (wasm32-wasip2), in their own target directory.
guests: bootstrap
	$(GUEST_BUILD) --manifest-path examples/Cargo.toml
	$(GUEST_BUILD) --manifest-path tests/guests/Cargo.toml

## Test the Go SDK and example natively, then build the example as a WASI preview1 reactor.
go-guests: bootstrap
	cd guest-sdk/go && $(GO_ENV) $(GO) vet ./... && $(GO_ENV) $(GO) test ./...
	cd examples/go-orders && $(GO_ENV) $(GO) vet ./... && $(GO_ENV) $(GO) test ./...
	cd examples/go-totals && $(GO_ENV) $(GO) vet ./... && $(GO_ENV) $(GO) test ./...
	cd tests/guests/go-scripted && GOOS=wasip1 GOARCH=wasm $(GO_ENV) $(GO) vet ./...
	cd tests/guests/go-conformance && $(GO_ENV) $(GO) vet ./... && $(GO_ENV) $(GO) test ./...
	cd examples/go-orders && GOOS=wasip1 GOARCH=wasm $(GO_ENV) $(GO) build -buildmode=c-shared \
		-o $(GUEST_TARGET_DIR)/go/go-orders.wasm .
	cd examples/go-totals && GOOS=wasip1 GOARCH=wasm $(GO_ENV) $(GO) build -buildmode=c-shared \
		-o $(GUEST_TARGET_DIR)/go/go-totals.wasm .

# Python handlers: the SDK and the example tested on the machine's Python, then built into
# components with componentize-py (again only when their sources change: it takes a while).
PY := $(CURDIR)/.venv/bin/python
COMPONENTIZE_PY := $(CURDIR)/.venv/bin/componentize-py
PY_SDK := $(wildcard guest-sdk/python/weir/*.py)

py-guests: bootstrap $(GUEST_TARGET_DIR)/py/py-orders.wasm
	PYTHONPATH=guest-sdk/python $(PY) -m unittest discover -s guest-sdk/python/tests
	cd examples/py-orders && PYTHONPATH=../../guest-sdk/python $(PY) -m unittest test_app
	cd tests/guests/py-conformance && PYTHONPATH=../../../guest-sdk/python $(PY) -m unittest test_app

$(GUEST_TARGET_DIR)/py/%.wasm: examples/%/app.py $(PY_SDK) wit/handler.wit | bootstrap
	mkdir -p $(@D)
	$(COMPONENTIZE_PY) -d wit -w handler componentize -p guest-sdk/python -p examples/$* \
		app -o $@

# JavaScript handlers: the SDK, the example and the conformance guest tested on Node.js, the
# SDK's TypeScript declarations checked, then the example bundled and built into a component
# with componentize-js (only when its sources change).
JS_SDK := $(wildcard guest-sdk/js/*.js guest-sdk/js/*.mjs guest-sdk/js/*.ts)
# Files, not directories: Node 21 and later read a directory given to --test as a pattern.
JS_TESTS := $(wildcard guest-sdk/js/test/*.test.js examples/js-orders/*.test.js \
	tests/guests/js-conformance/*.test.js)

js-guests: bootstrap $(GUEST_TARGET_DIR)/js/js-orders.wasm
	node --import ./guest-sdk/js/testing/register.js --test $(JS_TESTS)
	node_modules/.bin/tsc -p guest-sdk/js/tsconfig.json

$(GUEST_TARGET_DIR)/js/js-orders.wasm: $(wildcard examples/js-orders/*.js) $(JS_SDK) wit/handler.wit | bootstrap
	node guest-sdk/js/build.mjs examples/js-orders/app.js $@

build: bootstrap
	$(CARGO) build --release -p weir-runtime

## End to end on an embedded nats-server: stream, the orders example, traffic, summary.
demo: guests build
	./target/release/weir demo

## Every test: unit tests, then the integration suite against a real nats-server.
test: guests go-guests py-guests js-guests
	$(CARGO) test --workspace --all-targets

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
