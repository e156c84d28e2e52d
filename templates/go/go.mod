module {{name}}

go 1.24

require weir.dev/weir v0.0.0

// The Go SDK, copied into this project by `weir init`.
replace weir.dev/weir => ./weir-sdk/go
