//! Turns a WASI preview1 core module (a Go handler, built by mainline Go or TinyGo) into a
//! `weir:handler` component, the only form a node loads.
//!
//! ```text
//! core module (exports init, handle, cabi_realloc; imports weir:handler/host@0.x.0, from
//!              0.2.0 weir:handler/state@0.2.0, and wasi_snapshot_preview1)
//!   ── embed the type information of the world it was written for (wit/handler.wit, or
//!      wit/0.1.0/handler.wit for a module that imports weir:handler/host@0.1.0)
//!   ── adapt wasi_snapshot_preview1 to WASI 0.2 with the reactor adapter
//!   ──► component
//! ```
//!
//! The adapter comes from the wasmtime release the host runs, so the WASI it asks for is the
//! WASI the host links. Only Wasm is ever accepted: the result is compiled like any other
//! component.

use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
};
use wit_component::{ComponentEncoder, StringEncoding};
use wit_parser::Resolve;

use super::version::{ComponentError, Layer, wasm_layer};

/// The world a core module is made to satisfy, as today's SDKs write it.
const HANDLER_WIT: &str = include_str!("../../../wit/handler.wit");
/// The first version of the world, which modules built with an earlier SDK were written for.
const HANDLER_WIT_0_1: &str = include_str!("../../../wit/0.1.0/handler.wit");

/// The WIT of the world `module` was written for, by the versions of weir's interfaces it
/// imports.
fn world_of(module: &[u8]) -> anyhow::Result<&'static str> {
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        if let wasmparser::Payload::ImportSection(imports) = payload? {
            for import in imports.into_imports() {
                let module = import?.module;
                if module.starts_with("weir:handler/") && module.ends_with("@0.1.0") {
                    return Ok(HANDLER_WIT_0_1);
                }
            }
        }
    }
    Ok(HANDLER_WIT)
}

/// What `weir deploy` accepts: a component as it is, or a core module made into one.
pub fn componentize(bytes: Vec<u8>) -> Result<Vec<u8>, ComponentError> {
    match wasm_layer(&bytes) {
        None => Err(ComponentError::NotWasm),
        Some(Layer::Component) => Ok(bytes),
        Some(Layer::Core) => {
            adapt(bytes).map_err(|e| ComponentError::NotAdaptable(format!("{e:#}")))
        }
    }
}

fn adapt(mut module: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let mut resolve = Resolve::default();
    let package = resolve.push_str("handler.wit", world_of(&module)?)?;
    let world = resolve.select_world(&[package], Some("handler"))?;
    wit_component::embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8)?;
    ComponentEncoder::default()
        .module(&module)?
        .adapter(
            WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?
        .validate(true)
        .encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reactor core module that exports the world by hand and acks everything.
    const ACK_CORE: &str = include_str!("../../../tests/guests/ack-core.wat");

    #[test]
    fn a_component_passes_through_unchanged() {
        let component = b"\0asm\x0d\0\x01\0".to_vec();
        assert_eq!(
            componentize(component.clone()).ok(),
            Some(component),
            "already a component"
        );
    }

    #[test]
    fn a_core_module_that_exports_the_world_becomes_a_component() -> anyhow::Result<()> {
        let core = wat::parse_str(ACK_CORE)?;
        let component = componentize(core)?;
        assert!(matches!(wasm_layer(&component), Some(Layer::Component)));
        Ok(())
    }

    #[test]
    fn a_core_module_without_the_worlds_exports_is_refused_with_the_reason() -> anyhow::Result<()> {
        let core = wat::parse_str("(module (memory (export \"memory\") 1))")?;
        let Err(error) = componentize(core) else {
            anyhow::bail!("a module without handle or init was accepted");
        };
        let error = error.to_string();
        assert!(
            error.contains("handle") || error.contains("init"),
            "{error}"
        );
        Ok(())
    }

    #[test]
    fn bytes_that_are_not_wasm_are_refused() {
        assert!(matches!(
            componentize(b"#!/bin/sh\n".to_vec()),
            Err(ComponentError::NotWasm)
        ));
    }
}
