# The two quick-start commands: `make demo` and `make test`. Both bootstrap first.
CARGO ?= cargo
GUEST_TARGET_DIR := $(CURDIR)/target/guests
GUEST_BUILD := CARGO_TARGET_DIR=$(GUEST_TARGET_DIR) $(CARGO) build --release --target wasm32-wasip2

.PHONY: demo test bootstrap guests build check

bootstrap:
	@./scripts/bootstrap.sh

## Build the example and test guests (wasm32-wasip2), in their own target directory.
guests: bootstrap
	$(GUEST_BUILD) --manifest-path examples/Cargo.toml
	$(GUEST_BUILD) --manifest-path tests/guests/Cargo.toml

build: bootstrap
	$(CARGO) build --release -p weir-runtime

## End to end on an embedded nats-server: stream, the orders example, traffic, summary.
demo: guests build
	./target/release/weir demo

## Every test: unit tests, then the integration suite against a real nats-server.
test: guests
	$(CARGO) test --workspace --all-targets

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
