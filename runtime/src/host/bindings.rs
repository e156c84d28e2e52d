//! Host bindings for the `weir:handler` worlds, generated from `wit/` (documented there): the
//! current one, whose exports every handler's are called through, and each earlier minor
//! version, whose imports a node still provides so that its components run unchanged.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    world: "handler",
    path: "../wit",
    imports: { "weir:handler/state": async | trappable },
    exports: { default: async },
});

/// `weir:handler@0.1.0`, for its `host` import. Its exports are those of the current world,
/// type for type, so they are called through the current bindings.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        world: "handler",
        path: "../wit/0.1.0",
    });
}
