//! The dashboard's secret as the process receives it: refusing a token
//! that anyone could guess, and the login link printed for a made-up one.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Tokens that sample files and tutorials ship with. A dashboard on a
/// published port behind one of these is open to anyone who reads them.
const KNOWN_DEFAULTS: [&str; 8] = [
    "change-me",
    "changeme",
    "change_me",
    "admin",
    "password",
    "secret",
    "token",
    "test",
];

/// Why `token` may not guard the dashboard, if it may not.
pub fn refusal(token: &str) -> Option<String> {
    let folded = token.trim().to_ascii_lowercase();
    KNOWN_DEFAULTS.contains(&folded.as_str()).then(|| {
        format!(
            "ADMIN_TOKEN is set to the well-known default {token:?}; set a secret of your own \
             (for example `openssl rand -hex 32`), or unset it to have one made up and printed"
        )
    })
}

/// The link that signs in with `token` on a server listening on `addr`.
/// A wildcard bind address names no host a browser can open, so the link
/// goes to this machine's loopback address instead.
pub fn login_link(addr: SocketAddr, token: &str) -> String {
    let host = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!(
        "http://{}/admin/login?token={token}",
        SocketAddr::new(host, addr.port())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_tokens_are_refused_in_any_case() {
        assert!(refusal("change-me").is_some());
        assert!(refusal(" Change-Me ").is_some());
        assert!(refusal("admin").is_some());
        assert!(refusal("k3J9-a-secret-of-my-own").is_none());
    }

    #[test]
    fn the_login_link_names_a_host_a_browser_can_open() {
        let link = |addr: &str| login_link(addr.parse().unwrap(), "t");
        assert_eq!(
            link("0.0.0.0:3000"),
            "http://127.0.0.1:3000/admin/login?token=t"
        );
        assert_eq!(link("[::]:3000"), "http://[::1]:3000/admin/login?token=t");
        assert_eq!(
            link("192.0.2.7:8080"),
            "http://192.0.2.7:8080/admin/login?token=t"
        );
    }
}
