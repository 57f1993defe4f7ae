//! Host names resolved without tokio's blocking pool, for the agent's HTTP clients.
//!
//! Why: reqwest's default resolver runs `getaddrinfo` on tokio's blocking pool, and tokio
//! panics when the kernel refuses that pool its first thread (the unit's `TasksMax`,
//! `ulimit -u`). A one-shot scan whose IMDS endpoint was a host name lost its cloud section
//! that way, and a shipper's request would have ended in the same panic.
//!
//! [`ThreadOrInlineResolver`] runs each lookup on a thread of its own, so a hung lookup holds
//! no runtime thread and the client's connect timeout still ends the request. When the kernel
//! refuses that thread, the lookup runs on the calling thread: it then blocks the caller's
//! runtime for as long as the system resolver takes (its own timeouts, `resolv.conf`, bound
//! it), where the default resolver panicked. An IP address in a URL is never looked up.

use std::net::{SocketAddr, ToSocketAddrs};

/// A lookup's outcome, in reqwest's terms.
type Lookup = Result<reqwest::dns::Addrs, Box<dyn std::error::Error + Send + Sync>>;

/// reqwest's resolver for every HTTP client of the agent (IMDS, the shipper):
/// `ClientBuilder::dns_resolver(ThreadOrInlineResolver)`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ThreadOrInlineResolver;

impl reqwest::dns::Resolve for ThreadOrInlineResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let (answer, answered) = tokio::sync::oneshot::channel();
        let on_thread = host.clone();
        let spawned = std::thread::Builder::new().name("gw-resolve".into()).spawn(move || {
            // The request may have timed out and dropped the receiver: nobody to tell.
            let _ = answer.send(lookup(&on_thread));
        });
        match spawned {
            // Detached: a lookup that outlives its request ends on its own.
            Ok(_thread) => Box::pin(async move {
                answered
                    .await
                    .unwrap_or_else(|_| Err(format!("the lookup of {host} ended without an answer").into()))
            }),
            Err(_) => {
                crate::threads::count_refused();
                Box::pin(std::future::ready(lookup(&host)))
            }
        }
    }
}

/// `getaddrinfo`, as reqwest's own resolver calls it: port 0, which the client replaces with
/// the URL's.
fn lookup(host: &str) -> Lookup {
    let addresses: Vec<SocketAddr> = (host, 0).to_socket_addrs()?.collect();
    Ok(Box::new(addresses.into_iter()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::dns::Resolve;

    #[test]
    fn localhost_resolves_to_a_loopback_address_and_an_unknown_name_is_an_error() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let addresses: Vec<SocketAddr> =
            runtime.block_on(ThreadOrInlineResolver.resolve(name)).unwrap().collect();
        assert!(!addresses.is_empty());
        assert!(addresses.iter().all(|a| a.ip().is_loopback() && a.port() == 0), "{addresses:?}");
        // `.invalid` never resolves (RFC 2606).
        let name: reqwest::dns::Name = "no-such-host.invalid".parse().unwrap();
        assert!(runtime.block_on(ThreadOrInlineResolver.resolve(name)).is_err());
    }
    // The inline fallback (no thread could be made) is tested through the agent binary run
    // under `ulimit -u 1` with a host name as its IMDS endpoint (the daemon crate's tests).
}
