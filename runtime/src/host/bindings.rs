//! Host bindings for the `weir:handler` world, generated from `wit/` (documented there).
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    world: "handler",
    path: "../wit",
    exports: { default: async },
});
