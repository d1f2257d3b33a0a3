//! Address allow lists (`--uwsgi-allow-from`, `--forwarded-allow-ips`): which peers may speak
//! uwsgi to us, and whose scheme headers are believed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One entry of `--uwsgi-allow-from` or `--forwarded-allow-ips`: an address, a network
/// (`10.0.0.0/8`), or `*` for any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllowFrom {
    net: Option<(std::net::IpAddr, u8)>,
}

impl AllowFrom {
    /// `127.0.0.1` and `::1`: the default of both lists.
    pub fn loopback() -> Vec<AllowFrom> {
        vec![
            AllowFrom {
                net: Some(([127, 0, 0, 1].into(), 32)),
            },
            AllowFrom {
                net: Some((std::net::Ipv6Addr::LOCALHOST.into(), 128)),
            },
        ]
    }

    /// Whether `ip` is allowed (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let Some((net, prefix)) = self.net else {
            return true;
        };
        match (net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for AllowFrom {
    type Err = String;

    fn from_str(s: &str) -> Result<AllowFrom, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(AllowFrom { net: None });
        }
        let bad = || format!("{s:?} is not an address, ADDRESS/PREFIX or *");
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let ip: std::net::IpAddr = ip.parse().map_err(|_| bad())?;
        let ip = ip.to_canonical();
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(AllowFrom {
            net: Some((ip, prefix)),
        })
    }
}

impl fmt::Display for AllowFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.net {
            None => f.write_str("*"),
            Some((ip, p)) if p == if ip.is_ipv4() { 32 } else { 128 } => write!(f, "{ip}"),
            Some((ip, p)) => write!(f, "{ip}/{p}"),
        }
    }
}

impl Serialize for AllowFrom {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AllowFrom {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<AllowFrom, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
