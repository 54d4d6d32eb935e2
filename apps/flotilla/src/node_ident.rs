//! Who and where a node is: its id (`--id`, or `--id-from-hostname` for a StatefulSet pod)
//! and its addresses, the ones it binds and the ones it advertises (docs/networking.md).

use anyhow::{Result, anyhow};
use flotilla_raft::NodeAddr;

/// The node id: `--id`, or the host name's StatefulSet ordinal plus one.
pub fn node_id(id: Option<u64>, from_hostname: bool) -> Result<u64> {
    match (id, from_hostname) {
        (Some(id), false) => Ok(id),
        (None, true) => {
            let host = hostname()?;
            id_from_hostname(&host).map_err(|e| anyhow!("--id-from-hostname: {e}"))
        }
        _ => Err(anyhow!("give exactly one of --id and --id-from-hostname")),
    }
}

/// `$HOSTNAME`, else the kernel's host name.
fn hostname() -> Result<String> {
    if let Ok(h) = std::env::var("HOSTNAME")
        && !h.trim().is_empty()
    {
        return Ok(h.trim().to_string());
    }
    let h = nix::unistd::gethostname().map_err(|e| anyhow!("reading the host name: {e}"))?;
    h.into_string().map_err(|_| anyhow!("the host name is not UTF-8"))
}

/// `flotilla-2` → 3: a StatefulSet pod is `NAME-ORDINAL` (ordinals from 0) and node ids are
/// positive. A fully qualified name counts by its first label.
pub fn id_from_hostname(host: &str) -> Result<u64, String> {
    let name = host.split('.').next().unwrap_or(host);
    let ordinal = name
        .rsplit_once('-')
        .map(|(_, n)| n)
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("host name {host:?} does not end in -ORDINAL (like flotilla-0)"))?;
    let ordinal: u64 = ordinal.parse().map_err(|_| format!("ordinal of {host:?} is too large"))?;
    ordinal.checked_add(1).ok_or_else(|| format!("ordinal of {host:?} is too large"))
}

/// Where a node binds and what it advertises.
#[derive(Debug, PartialEq, Eq)]
pub struct Addrs {
    pub listen: String,
    pub api: String,
    pub advertise_peer: String,
    pub advertise_api: String,
}

/// The flags as given (`None`: not given).
pub struct AddrFlags<'a> {
    pub listen: Option<&'a str>,
    pub api: Option<&'a str>,
    pub advertise_peer: Option<&'a str>,
    pub advertise_api: Option<&'a str>,
}

/// Binds default to this node's `--initial-cluster` entry (`me`), else 127.0.0.1 and the
/// default ports; advertised addresses default to the entry, else the bind addresses. A
/// wildcard bind cannot be advertised, and an advertised address must agree with the
/// entry: the initial cluster is what every member records for this node.
pub fn addresses(id: u64, me: Option<&NodeAddr>, f: &AddrFlags) -> Result<Addrs> {
    let listen = f
        .listen
        .map(String::from)
        .or_else(|| me.map(|m| m.raft_addr.clone()))
        .unwrap_or_else(|| format!("127.0.0.1:{}", 7100 + id));
    let api = f
        .api
        .map(String::from)
        .or_else(|| me.map(|m| m.api_addr.clone()))
        .unwrap_or_else(|| format!("127.0.0.1:{}", 8100 + id));
    let advertise_peer = advertised(
        "--advertise-peer",
        "--listen",
        f.advertise_peer,
        me.map(|m| &m.raft_addr),
        &listen,
    )?;
    let advertise_api =
        advertised("--advertise-api", "--api", f.advertise_api, me.map(|m| &m.api_addr), &api)?;
    Ok(Addrs { listen, api, advertise_peer, advertise_api })
}

fn advertised(
    flag: &str,
    bind_flag: &str,
    given: Option<&str>,
    entry: Option<&String>,
    bind: &str,
) -> Result<String> {
    let chosen = match (given, entry) {
        (Some(g), Some(e)) if g != e.as_str() => {
            return Err(anyhow!(
                "{flag} {g} differs from this node's entry {e} in --initial-cluster; give the same address"
            ));
        }
        (Some(g), _) => g.to_string(),
        (None, Some(e)) => e.clone(),
        (None, None) if is_wildcard(bind) => {
            return Err(anyhow!(
                "{bind_flag} {bind} is a wildcard address, which peers cannot dial: give {flag} HOST:PORT"
            ));
        }
        (None, None) => bind.to_string(),
    };
    let port = chosen.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
    if port.is_none() || chosen.contains('/') {
        return Err(anyhow!("{flag} {chosen:?} is not HOST:PORT"));
    }
    if is_wildcard(&chosen) {
        return Err(anyhow!("{flag} {chosen} is a wildcard address; advertise one peers can dial"));
    }
    Ok(chosen)
}

/// `0.0.0.0:P`, `[::]:P` or `:P`.
fn is_wildcard(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.is_empty() || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_the_trailing_ordinal() {
        let cases: &[(&str, Option<u64>)] = &[
            ("flotilla-0", Some(1)),
            ("flotilla-2", Some(3)),
            ("web-db-12", Some(13)),
            ("flotilla-0.flotilla-peers.default.svc.cluster.local", Some(1)),
            ("flotilla", None),
            ("flotilla-x", None),
            ("flotilla-", None),
            ("flotilla-+1", None),
            ("flotilla-18446744073709551615", None),
        ];
        for (i, (host, want)) in cases.iter().enumerate() {
            assert_eq!(id_from_hostname(host).ok(), *want, "#{i} {host:?}");
        }
    }

    fn flags<'a>(
        listen: Option<&'a str>,
        api: Option<&'a str>,
        adv_peer: Option<&'a str>,
        adv_api: Option<&'a str>,
    ) -> AddrFlags<'a> {
        AddrFlags { listen, api, advertise_peer: adv_peer, advertise_api: adv_api }
    }

    #[test]
    fn advertised_addresses_default_to_the_entry_then_the_bind() {
        let me = NodeAddr {
            raft_addr: "flotilla-0.peers:7100".into(),
            api_addr: "flotilla-0.peers:8100".into(),
        };
        let a =
            addresses(1, Some(&me), &flags(Some("0.0.0.0:7100"), Some("0.0.0.0:8100"), None, None))
                .unwrap();
        assert_eq!(
            (a.listen.as_str(), a.advertise_peer.as_str()),
            ("0.0.0.0:7100", "flotilla-0.peers:7100")
        );
        assert_eq!(
            (a.api.as_str(), a.advertise_api.as_str()),
            ("0.0.0.0:8100", "flotilla-0.peers:8100")
        );
        let b = addresses(2, None, &flags(None, None, None, None)).unwrap();
        assert_eq!(b.advertise_peer, "127.0.0.1:7102");
        assert_eq!(b.advertise_api, "127.0.0.1:8102");
        let c = addresses(
            2,
            None,
            &flags(Some("[::]:7"), Some("127.0.0.1:8"), Some("10.0.0.2:7"), None),
        )
        .unwrap();
        assert_eq!(
            (c.advertise_peer.as_str(), c.advertise_api.as_str()),
            ("10.0.0.2:7", "127.0.0.1:8")
        );
    }

    #[test]
    fn wildcards_and_disagreements_are_refused() {
        let me = NodeAddr { raft_addr: "h:1".into(), api_addr: "h:2".into() };
        let bad = [
            (None, flags(Some("0.0.0.0:7100"), None, None, None)),
            (None, flags(Some("[::]:7100"), None, None, None)),
            (None, flags(None, Some(":8100"), None, None)),
            (None, flags(None, None, Some("0.0.0.0:1"), None)),
            (None, flags(None, None, Some("nohost"), None)),
            (None, flags(None, None, None, Some("http://h:1"))),
            (Some(&me), flags(None, None, Some("other:1"), None)),
            (Some(&me), flags(None, None, None, Some("other:2"))),
        ];
        for (i, (me, f)) in bad.iter().enumerate() {
            assert!(addresses(2, *me, f).is_err(), "#{i}");
        }
    }
}
