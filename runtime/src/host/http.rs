//! `wasi:http` for guests whose toolchain imports it by default (componentize-js does unless
//! told not to): each `wasi:http` interface a component imports is defined for that component
//! alone, with functions that fail the call and resources that hold nothing. A component that
//! imports `wasi:http` and never uses it runs unchanged; one that makes a request traps, before
//! a byte leaves the node or the host keeps anything the guest built. A handler's only way out
//! is `publish`.

use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, ResourceType};
use wasmtime_wasi_io::poll::DynPollable;
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream, Error as IoError};

use super::state::HostState;

/// The interfaces this module stands in for.
const PREFIX: &str = "wasi:http/";

/// The host type of every `wasi:http` resource: there is never a value of it.
struct NoHttp;

/// The host type of a resource a `wasi:http` interface exports: `wasi:io`'s own for the ones
/// it takes from `wasi:io`, else one that never has a value.
fn resource_type(name: &str) -> ResourceType {
    match name {
        "input-stream" => ResourceType::host::<DynInputStream>(),
        "output-stream" => ResourceType::host::<DynOutputStream>(),
        "pollable" => ResourceType::host::<DynPollable>(),
        "io-error" => ResourceType::host::<IoError>(),
        _ => ResourceType::host::<NoHttp>(),
    }
}

/// `linker` with every `wasi:http` interface `component` imports defined as refusing, or
/// `None` if it imports none.
pub(crate) fn refusing(
    engine: &Engine,
    linker: &Linker<HostState>,
    component: &Component,
) -> wasmtime::Result<Option<Linker<HostState>>> {
    let ty = component.component_type();
    let mut imports = ty
        .imports(engine)
        .filter(|(name, _)| name.starts_with(PREFIX));
    let Some(first) = imports.next() else {
        return Ok(None);
    };
    let mut linker = linker.clone();
    for (interface, item) in std::iter::once(first).chain(imports) {
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            wasmtime::bail!("{interface} is imported as something other than an interface");
        };
        let mut defined = linker.instance(interface)?;
        for (name, item) in instance.exports(engine) {
            match item.ty {
                ComponentItem::ComponentFunc(_) => {
                    let function = format!("{interface}#{name}");
                    defined.func_new(name, move |_, _, _, _| {
                        wasmtime::bail!(
                            "{function}: weir handlers may not use HTTP; publish instead"
                        )
                    })?;
                }
                ComponentItem::Resource(_) => {
                    defined.resource(name, resource_type(name), |_, _| Ok(()))?;
                }
                _ => {}
            }
        }
    }
    Ok(Some(linker))
}
