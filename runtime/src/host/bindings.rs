//! Host bindings for the `weir:handler` world, generated from `wit/`.

wasmtime::component::bindgen!({
    world: "handler",
    path: "../wit",
    exports: { default: async },
});
