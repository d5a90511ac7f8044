//! Flag values that are socket addresses: `--listen` (what the launcher binds for every worker) and
//! `--admin` (where its HTTP endpoint listens). Parsed once, by cli.rs, into `SocketAddr`s.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// The most `--listen` addresses: every worker holds one socket per address, and a server that needs
/// more is better served by a port range of its own.
const MAX_LISTEN: usize = 64;

/// `--listen` values: `PORT` ([::]:PORT, dual-stack, as systemd's ListenStream=PORT), `IPv4:PORT` or
/// `[IPv6]:PORT`. Port 0 and repeats are refused.
pub fn parse_listen(values: &[String]) -> Result<Vec<SocketAddr>, String> {
    if values.len() > MAX_LISTEN {
        return Err(format!(
            "{} --listen addresses are more than the limit of {MAX_LISTEN}",
            values.len()
        ));
    }
    let mut addresses: Vec<SocketAddr> = Vec::new();
    for value in values {
        let text = value.trim();
        let address = match text.parse::<u16>() {
            Ok(port) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
            Err(_) => text.parse::<SocketAddr>().map_err(|_| {
                format!(
                    "--listen {value}: expected PORT, IPv4:PORT or [IPv6]:PORT with numeric addresses \
                     (8080, 127.0.0.1:8080, [::]:8080)"
                )
            })?,
        };
        if address.port() == 0 {
            return Err(format!(
                "--listen {value}: port 0 would give every worker a different port; name the port"
            ));
        }
        if addresses.contains(&address) {
            return Err(format!("--listen {value} is given twice"));
        }
        addresses.push(address);
    }
    Ok(addresses)
}

/// `--admin` values: `PORT` (127.0.0.1:PORT: metrics and status stay on the host unless asked),
/// `IPv4:PORT` or `[IPv6]:PORT`. Port 0 picks a free port (the launcher logs which).
pub fn parse_admin(value: &str) -> Result<SocketAddr, String> {
    let text = value.trim();
    match text.parse::<u16>() {
        Ok(port) => Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
        Err(_) => text.parse::<SocketAddr>().map_err(|_| {
            format!(
                "--admin {value}: expected PORT, IPv4:PORT or [IPv6]:PORT with numeric addresses \
                 (9900, 127.0.0.1:9900, 0.0.0.0:9900, [::]:9900)"
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse_in_order() {
        let parsed =
            parse_listen(&["8080".into(), "127.0.0.1:81".into(), "[::1]:82".into()]).unwrap();
        assert_eq!(
            parsed,
            vec![
                "[::]:8080".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:81".parse().unwrap(),
                "[::1]:82".parse().unwrap()
            ]
        );
        assert!(parse_listen(&["0".into()]).is_err());
        assert!(parse_listen(&["localhost:80".into()]).is_err());
        assert!(parse_listen(&["80".into(), "[::]:80".into()]).is_err());
    }

    #[test]
    fn admin_addresses_default_to_localhost() {
        assert_eq!(
            parse_admin("9900").unwrap(),
            "127.0.0.1:9900".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_admin("[::]:9900").unwrap(),
            "[::]:9900".parse::<SocketAddr>().unwrap()
        );
        assert!(parse_admin("localhost:9900").is_err());
    }
}
