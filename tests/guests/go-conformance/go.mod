module weir.dev/tests/go-conformance

go 1.24

require weir.dev/weir v0.0.0

replace weir.dev/weir => ../../../guest-sdk/go
