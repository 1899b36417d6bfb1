//! The SSRF guard: which addresses callbacks may reach, and name resolution that only ever hands
//! out checked addresses. A callback URL is judged by the address it means, whatever its spelling
//! (the URL parser turns `0x7f.1`, `2130706433` and `[::ffff:127.0.0.1]` into the addresses they
//! mean), and by every address its host resolves to; the connection then goes to an address that
//! was checked, so a DNS answer that changes after the check (rebinding) cannot slip through.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use ipnet::IpNet;

use super::attempt::{AttemptError, ErrorClass};
use crate::setting::InvalidSetting;

/// Why an address is blocked, or `None` if callbacks may reach it.
pub fn blocked_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, network: [u8; 4], prefix: u8) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(network)) & mask)
}

fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u8, &str)] = &[
        ([0, 0, 0, 0], 8, "\"this network\" (0.0.0.0/8)"),
        ([10, 0, 0, 0], 8, "private network (10.0.0.0/8)"),
        ([100, 64, 0, 0], 10, "carrier-grade NAT (100.64.0.0/10)"),
        ([127, 0, 0, 0], 8, "loopback (127.0.0.0/8)"),
        ([169, 254, 0, 0], 16, "link-local, cloud metadata (169.254.0.0/16)"),
        ([172, 16, 0, 0], 12, "private network (172.16.0.0/12)"),
        ([192, 0, 0, 0], 24, "IETF protocol assignments (192.0.0.0/24)"),
        ([192, 0, 2, 0], 24, "documentation (192.0.2.0/24)"),
        ([192, 88, 99, 0], 24, "6to4 relay anycast (192.88.99.0/24)"),
        ([192, 168, 0, 0], 16, "private network (192.168.0.0/16)"),
        ([198, 18, 0, 0], 15, "benchmarking (198.18.0.0/15)"),
        ([198, 51, 100, 0], 24, "documentation (198.51.100.0/24)"),
        ([203, 0, 113, 0], 24, "documentation (203.0.113.0/24)"),
        ([224, 0, 0, 0], 4, "multicast (224.0.0.0/4)"),
        ([240, 0, 0, 0], 4, "reserved or broadcast (240.0.0.0/4)"),
    ];
    RANGES.iter().find(|(network, prefix, _)| in_v4(ip, *network, *prefix)).map(|(_, _, why)| *why)
}

fn blocked_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    let bits = u128::from(ip);
    let in_v6 = |network: u128, prefix: u32| (bits >> (128 - prefix)) == (network >> (128 - prefix));
    if ip.is_unspecified() {
        return Some("unspecified (::)");
    }
    if ip.is_loopback() {
        return Some("loopback (::1)");
    }
    // IPv4 addresses carried in IPv6 are judged as the IPv4 address they carry.
    let embedded_v4 = |high: u16, low: u16| Ipv4Addr::from(((high as u32) << 16) | low as u32);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return blocked_v4(v4).map(|_| "IPv4-mapped address of a blocked IPv4 address");
    }
    if segments[..6] == [0, 0, 0, 0, 0, 0] {
        return blocked_v4(embedded_v4(segments[6], segments[7]))
            .map(|_| "IPv4-compatible address of a blocked IPv4 address")
            .or(Some("IPv4-compatible address (deprecated, ::/96)"));
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return blocked_v4(embedded_v4(segments[6], segments[7])).map(|_| "NAT64 address of a blocked IPv4 address");
    }
    if segments[0] == 0x2002 {
        return blocked_v4(embedded_v4(segments[1], segments[2])).map(|_| "6to4 address of a blocked IPv4 address");
    }
    const RANGES: &[(u128, u32, &str)] = &[
        (0x0064_ff9b_0001 << 80, 48, "local-use NAT64 (64:ff9b:1::/48)"),
        (0x0100 << 112, 64, "discard-only (100::/64)"),
        (0x2001 << 112, 23, "IETF protocol assignments, Teredo (2001::/23)"),
        (0x2001_0db8 << 96, 32, "documentation (2001:db8::/32)"),
        (0x3fff << 112, 20, "documentation (3fff::/20)"),
        (0xfc00 << 112, 7, "unique local address (fc00::/7)"),
        (0xfe80 << 112, 10, "link-local (fe80::/10)"),
        (0xfec0 << 112, 10, "site-local (fec0::/10)"),
        (0xff00 << 112, 8, "multicast (ff00::/8)"),
    ];
    RANGES.iter().find(|(network, prefix, _)| in_v6(*network, *prefix)).map(|(_, _, why)| *why)
}

/// A special-use domain name (RFC 6761, RFC 6762, RFC 8375): one that can only mean a local host
/// or nothing at all, whatever a DNS server says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecialUse {
    /// `localhost` and `*.localhost`: the loopback addresses, always (RFC 6761 section 6.3).
    Loopback,
    /// A name that cannot be a public receiver; the text says why.
    Refused(&'static str),
}

/// Judges `host` by its name alone, case-insensitively and with or without the final dot.
pub fn special_use(host: &str) -> Option<SpecialUse> {
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    let is = |suffix: &str| name == suffix || name.ends_with(&format!(".{suffix}"));
    if is("localhost") {
        Some(SpecialUse::Loopback)
    } else if is("local") {
        Some(SpecialUse::Refused(
            "is a multicast DNS name (.local, RFC 6762): it names a machine on the local network of whoever looks it up, not a public receiver",
        ))
    } else if is("home.arpa") {
        Some(SpecialUse::Refused(
            "is a home network name (.home.arpa, RFC 8375): it only means something inside one private network",
        ))
    } else if is("invalid") {
        Some(SpecialUse::Refused("is under .invalid (RFC 6761): such names never resolve"))
    } else {
        None
    }
}

/// Where callbacks may go: everything public, plus the networks `allow_private_networks` lists.
#[derive(Clone, Debug, Default)]
pub struct DestinationPolicy {
    pub allowed_networks: Vec<IpNet>,
}

impl DestinationPolicy {
    /// Why `ip` may not be reached, or `None` if it may.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        let reason = blocked_reason(ip)?;
        let canonical = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if self.allowed_networks.iter().any(|net| net.contains(&ip) || net.contains(&canonical)) {
            return None;
        }
        Some(reason)
    }
}

/// The resolver and the policy together: what every callback destination passes through.
#[derive(Clone)]
pub struct Guard {
    pub resolver: HostResolver,
    pub policy: Arc<DestinationPolicy>,
}

impl Guard {
    pub fn from_config(config: &crate::config::WebhookConfig) -> Result<Guard, InvalidSetting> {
        Ok(Guard {
            resolver: HostResolver::new(&config.dns_servers)?,
            policy: Arc::new(DestinationPolicy { allowed_networks: config.allow_private_networks.clone() }),
        })
    }

    /// The allowed addresses of `host`.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, AttemptError> {
        self.resolver.resolve_allowed(&self.policy, host, port).await
    }
}

/// Resolves callback hosts: the system resolver by default, or the DNS servers configured in
/// `webhook.dns_servers`.
#[derive(Clone)]
pub enum HostResolver {
    System,
    Dns(Arc<hickory_resolver::Resolver<TokioRuntimeProvider>>),
}

impl HostResolver {
    pub fn new(dns_servers: &[SocketAddr]) -> Result<HostResolver, InvalidSetting> {
        if dns_servers.is_empty() {
            return Ok(HostResolver::System);
        }
        let name_servers = dns_servers
            .iter()
            .map(|server| {
                let mut udp = ConnectionConfig::udp();
                udp.port = server.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = server.port();
                NameServerConfig::new(server.ip(), true, vec![udp, tcp])
            })
            .collect();
        let mut options = ResolverOpts::default();
        // Answers are checked on every delivery; caching them would only add staleness.
        options.cache_size = 0;
        let resolver = hickory_resolver::Resolver::builder_with_config(
            ResolverConfig::from_name_servers(name_servers),
            TokioRuntimeProvider::default(),
        )
        .with_options(options)
        .build()
        .map_err(|e| {
            InvalidSetting::new("webhook.dns_servers", format!("cannot set up the DNS resolver: {e}")).caused_by(e)
        })?;
        Ok(HostResolver::Dns(Arc::new(resolver)))
    }

    /// Every address `host` resolves to (an IP literal resolves to itself; special-use names are
    /// judged without DNS, see [`special_use`]).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, AttemptError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        match special_use(host) {
            Some(SpecialUse::Loopback) => {
                return Ok(vec![
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
                    SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
                ]);
            }
            Some(SpecialUse::Refused(why)) => {
                return Err(AttemptError::new(ErrorClass::Blocked, format!("{host} {why}")));
            }
            None => {}
        }
        let failed =
            |e: &dyn std::fmt::Display| AttemptError::new(ErrorClass::Dns, format!("cannot resolve {host}: {e}"));
        let addresses: Vec<SocketAddr> = match self {
            HostResolver::System => tokio::net::lookup_host((host, port)).await.map_err(|e| failed(&e))?.collect(),
            HostResolver::Dns(resolver) => resolver
                .lookup_ip(host)
                .await
                .map_err(|e| failed(&e))?
                .iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
        };
        if addresses.is_empty() {
            return Err(AttemptError::new(ErrorClass::Dns, format!("{host} has no addresses")));
        }
        Ok(addresses)
    }

    /// The addresses of `host` that `policy` allows; an error naming every refused address when
    /// none is allowed.
    pub async fn resolve_allowed(
        &self,
        policy: &DestinationPolicy,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, AttemptError> {
        let addresses = self.resolve(host, port).await?;
        policy.allowed(host, addresses)
    }
}

impl DestinationPolicy {
    /// The addresses of `host` this policy allows; an error naming every refused address (and why)
    /// when none is.
    pub fn allowed(&self, host: &str, addresses: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, AttemptError> {
        let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
            addresses.into_iter().partition(|address| self.refusal(address.ip()).is_none());
        if allowed.is_empty() {
            let reasons: Vec<String> =
                refused.iter().map(|a| format!("{} ({})", a.ip(), self.refusal(a.ip()).unwrap_or("blocked"))).collect();
            let what = if host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok() {
                format!("{host} is a blocked address: {}", reasons.join(", "))
            } else {
                format!("{host} resolves only to blocked addresses: {}", reasons.join(", "))
            };
            return Err(AttemptError::new(ErrorClass::Blocked, what));
        }
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Judges a URL by the address its host means once the URL parser has read it.
    fn judged(url: &str) -> Option<&'static str> {
        let parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        let ip = match parsed.host().unwrap() {
            url::Host::Ipv4(v4) => IpAddr::V4(v4),
            url::Host::Ipv6(v6) => IpAddr::V6(v6),
            url::Host::Domain(domain) => panic!("{url} parsed as the domain {domain}"),
        };
        DestinationPolicy::default().refusal(ip)
    }

    #[test]
    fn every_spelling_of_a_blocked_address_is_blocked() {
        let blocked = [
            "https://127.0.0.1/",
            "https://127.1/",
            "https://127.0.1/",
            "https://2130706433/",
            "https://0x7f000001/",
            "https://0x7f.0.0.1/",
            "https://0x7f.1/",
            "https://017700000001/",
            "https://0177.0.0.1/",
            "https://0177.1/",
            "https://127.000.000.001/",
            "https://0/",
            "https://0.0.0.0/",
            "https://10.0.0.1/",
            "https://10.1/",
            "https://012.0.0.1/",
            "https://0xa.0.0.1/",
            "https://172.16.0.1/",
            "https://172.31.255.255/",
            "https://192.168.1.1/",
            "https://3232235777/",
            "https://100.64.0.1/",
            "https://100.127.255.254/",
            "https://169.254.169.254/",
            "https://2852039166/",
            "https://0xa9fea9fe/",
            "https://0251.0376.0251.0376/",
            "https://192.0.0.8/",
            "https://192.0.2.10/",
            "https://198.18.0.1/",
            "https://198.19.255.1/",
            "https://198.51.100.7/",
            "https://203.0.113.9/",
            "https://224.0.0.1/",
            "https://239.255.255.250/",
            "https://255.255.255.255/",
            "https://240.0.0.1/",
            "https://[::]/",
            "https://[::1]/",
            "https://[0:0:0:0:0:0:0:1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:7f00:1]/",
            "https://[0:0:0:0:0:ffff:a9fe:a9fe]/",
            "https://[::ffff:10.0.0.1]/",
            "https://[::127.0.0.1]/",
            "https://[::10.0.0.1]/",
            "https://[64:ff9b::127.0.0.1]/",
            "https://[64:ff9b::a9fe:a9fe]/",
            "https://[64:ff9b:1::1]/",
            "https://[2002:7f00:1::]/",
            "https://[2002:a9fe:a9fe::1]/",
            "https://[2002:c0a8:101::]/",
            "https://[fc00::1]/",
            "https://[fd12:3456:789a::1]/",
            "https://[fe80::1]/",
            "https://[fec0::1]/",
            "https://[ff02::1]/",
            "https://[2001:db8::1]/",
            "https://[2001::1]/",
            "https://[100::1]/",
            "https://[3fff::1]/",
        ];
        for url in blocked {
            assert!(judged(url).is_some(), "{url} must be blocked");
        }
    }

    #[test]
    fn public_addresses_are_allowed_in_every_spelling() {
        let allowed = [
            "https://8.8.8.8/",
            "https://134744072/",
            "https://0x8.0x8.0x8.0x8/",
            "https://1.1.1.1/",
            "https://172.32.0.1/",
            "https://172.15.255.255/",
            "https://100.128.0.1/",
            "https://100.63.255.255/",
            "https://169.253.0.1/",
            "https://198.20.0.1/",
            "https://[2606:4700:4700::1111]/",
            "https://[::ffff:8.8.8.8]/",
            "https://[64:ff9b::8.8.8.8]/",
            "https://[2002:808:808::1]/",
            "https://[2a00:1450:4001::200e]/",
        ];
        for url in allowed {
            assert_eq!(judged(url), None, "{url} must be allowed");
        }
    }

    #[test]
    fn allowed_networks_exempt_exactly_what_they_list() {
        let policy = DestinationPolicy { allowed_networks: vec!["127.0.0.0/8".parse().unwrap()] };
        assert_eq!(policy.refusal("127.0.0.2".parse().unwrap()), None);
        assert_eq!(policy.refusal("::ffff:127.0.0.1".parse().unwrap()), None);
        assert!(policy.refusal("10.0.0.1".parse().unwrap()).is_some());
        assert!(policy.refusal("::1".parse().unwrap()).is_some());
        assert!(policy.refusal("169.254.169.254".parse().unwrap()).unwrap().contains("metadata"));
    }

    #[tokio::test]
    async fn special_use_names_are_judged_without_dns() {
        assert_eq!(special_use("localhost."), Some(SpecialUse::Loopback));
        assert_eq!(special_use("API.LocalHost"), Some(SpecialUse::Loopback));
        assert_eq!(special_use("notlocalhost"), None);
        assert!(matches!(special_use("printer.local"), Some(SpecialUse::Refused(_))));
        assert!(matches!(special_use("nas.home.arpa."), Some(SpecialUse::Refused(_))));
        assert!(matches!(special_use("x.invalid"), Some(SpecialUse::Refused(_))));
        assert_eq!(special_use("example.com"), None);
        let resolver = HostResolver::System;
        let refused = resolver.resolve_allowed(&DestinationPolicy::default(), "localhost.", 443).await.unwrap_err();
        assert_eq!(refused.class, ErrorClass::Blocked);
        assert!(
            refused.detail.contains("localhost. resolves only to blocked addresses: 127.0.0.1 (loopback"),
            "{}",
            refused.detail
        );
        let loopback = DestinationPolicy { allowed_networks: vec!["127.0.0.0/8".parse().unwrap()] };
        let allowed = resolver.resolve_allowed(&loopback, "api.localhost", 8443).await.unwrap();
        assert_eq!(allowed, vec!["127.0.0.1:8443".parse().unwrap()]);
        let mdns = resolver.resolve("printer.local", 443).await.unwrap_err();
        assert_eq!(mdns.class, ErrorClass::Blocked);
        assert!(mdns.detail.starts_with("printer.local is a multicast DNS name"), "{}", mdns.detail);
    }

    #[tokio::test]
    async fn literal_addresses_are_judged_without_a_lookup() {
        let resolver = HostResolver::System;
        let error = resolver.resolve_allowed(&DestinationPolicy::default(), "10.1.2.3", 443).await.unwrap_err();
        assert_eq!(error.class, ErrorClass::Blocked);
        assert!(error.detail.contains("10.1.2.3 is a blocked address: 10.1.2.3 (private network"), "{}", error.detail);
        let allowed = resolver.resolve_allowed(&DestinationPolicy::default(), "[2606:4700::1111]", 443).await.unwrap();
        assert_eq!(allowed, vec!["[2606:4700::1111]:443".parse().unwrap()]);
    }
}
