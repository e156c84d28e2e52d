//! A handler version: a component compiled and linked once, checked against the world.

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::bindings::HandlerPre;
use super::state::HostState;

/// The world a handler is written against today. A node also runs components of every earlier
/// minor version (`WORLDS`).
pub const WORLD: &str = "weir:handler/handler@0.2.0";

/// Every world a node runs components of.
pub const WORLDS: &str = "weir:handler/handler@0.2.0 or @0.1.0";

/// The interface a handler that keeps state imports.
const STATE_INTERFACE: &str = "weir:handler/state@0.2.0";

/// Why a file cannot be a handler. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file (it does not start with the \\0asm header)")]
    NotWasm,
    /// A core module where a component was expected: `weir deploy` makes components of core
    /// modules, nodes load only components.
    #[error(
        "this is a core WebAssembly module, not a component: deploy it with `weir deploy`, \
         which makes it a component"
    )]
    CoreModule,
    /// A core module that could not be made a `weir:handler` component.
    #[error(
        "this core WebAssembly module cannot be made a {WORLD} component: {0}. A Go handler \
         must use guest-sdk/go and be built with `GOOS=wasip1 GOARCH=wasm go build \
         -buildmode=c-shared`; a Rust handler with `cargo build --target wasm32-wasip2`"
    )]
    NotAdaptable(String),
    /// Malformed, or uses features the engine does not support.
    #[error("not a valid WebAssembly component: {0:#}")]
    Invalid(wasmtime::Error),
    /// A missing or mismatched import or export, named in the message.
    #[error("the component does not satisfy the world {WORLDS}: {0}")]
    WorldMismatch(String),
}

/// A compiled and linked handler, ready to instantiate many times.
#[derive(Clone)]
pub struct HandlerVersion {
    digest: String,
    /// Whether the component imports `state`.
    keeps_state: bool,
    pub(crate) pre: HandlerPre<HostState>,
}

impl std::fmt::Debug for HandlerVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerVersion")
            .field("digest", &self.digest)
            .field("keeps_state", &self.keeps_state)
            .finish_non_exhaustive()
    }
}

impl HandlerVersion {
    pub(crate) fn compile(
        engine: &Engine,
        linker: &Linker<HostState>,
        bytes: &[u8],
    ) -> Result<Self, ComponentError> {
        match wasm_layer(bytes) {
            None => return Err(ComponentError::NotWasm),
            Some(Layer::Core) => return Err(ComponentError::CoreModule),
            Some(Layer::Component) => {}
        }
        // Only ever compiled from Wasm bytes: precompiled native code is never loaded.
        let component = Component::new(engine, bytes).map_err(ComponentError::Invalid)?;
        let with_http = super::http::refusing(engine, linker, &component)
            .map_err(|e| ComponentError::WorldMismatch(format!("{e:#}")))?;
        let instance_pre = with_http
            .as_ref()
            .unwrap_or(linker)
            .instantiate_pre(&component)
            .map_err(|e| ComponentError::WorldMismatch(format!("{e:#}")))?;
        let pre = HandlerPre::new(instance_pre)
            .map_err(|e| ComponentError::WorldMismatch(format!("{e:#}")))?;
        let keeps_state = component
            .component_type()
            .imports(engine)
            .any(|(name, _)| name == STATE_INTERFACE);
        Ok(Self {
            digest: digest(bytes),
            keeps_state,
            pre,
        })
    }

    /// Whether the handler keeps state (its component imports `weir:handler/state`).
    pub fn keeps_state(&self) -> bool {
        self.keeps_state
    }

    /// The SHA-256 of the component's bytes, in hex: the version's identity.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

/// The SHA-256 of `bytes` in lowercase hex.
pub(crate) fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) enum Layer {
    Core,
    Component,
}

/// Reads the preamble: magic, then a 16-bit version and a 16-bit layer (0 core, 1 component).
pub(crate) fn wasm_layer(bytes: &[u8]) -> Option<Layer> {
    let preamble = bytes.get(..8)?;
    if &preamble[..4] != b"\0asm" {
        return None;
    }
    match u16::from_le_bytes([preamble[6], preamble[7]]) {
        0 => Some(Layer::Core),
        _ => Some(Layer::Component),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preamble_tells_core_modules_from_components() {
        assert!(matches!(wasm_layer(b"\0asm\x01\0\0\0"), Some(Layer::Core)));
        assert!(matches!(
            wasm_layer(b"\0asm\x0d\0\x01\0"),
            Some(Layer::Component)
        ));
        assert!(wasm_layer(b"#!/bin/sh\n").is_none());
        assert!(wasm_layer(b"\0as").is_none());
    }

    #[test]
    fn digest_is_lowercase_hex_sha256() {
        assert_eq!(
            digest(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
