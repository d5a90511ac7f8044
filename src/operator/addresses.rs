//! Flag values that are socket addresses: `--listen` (what the launcher binds for every worker, TCP
//! or `udp:`) and `--admin` (where its HTTP endpoint listens). Parsed once, by cli.rs, into
//! `ListenAddress`es and a `SocketAddr`.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::kernel::listen::ListenAddress;

/// The prefix of a `--listen` UDP address, as systemd-socket-activate and many servers' configs
/// write them (`udp:127.0.0.1:8053`); systemd's unit option for it is ListenDatagram=.
const UDP_PREFIX: &str = "udp:";
/// The prefix of a TCP address, the default: accepted so that a list can say both.
const TCP_PREFIX: &str = "tcp:";

/// The most `--listen` addresses: every worker holds one socket per address, and a server that needs
/// more is better served by a port range of its own.
const MAX_LISTEN: usize = 64;

/// `--listen` values: `PORT` ([::]:PORT, dual-stack, as systemd's ListenStream=PORT), `IPv4:PORT` or
/// `[IPv6]:PORT` for TCP; each with `udp:` before it for a UDP socket (systemd's ListenDatagram=),
/// or `tcp:` to say TCP. Port 0 and repeats are refused; TCP and UDP on one port are two sockets.
pub fn parse_listen(values: &[String]) -> Result<Vec<ListenAddress>, String> {
    if values.len() > MAX_LISTEN {
        return Err(format!(
            "{} --listen addresses are more than the limit of {MAX_LISTEN}",
            values.len()
        ));
    }
    let mut addresses: Vec<ListenAddress> = Vec::new();
    for value in values {
        let text = value.trim();
        let (text, socket): (_, fn(SocketAddr) -> ListenAddress) =
            match (text.strip_prefix(UDP_PREFIX), text.strip_prefix(TCP_PREFIX)) {
                (Some(rest), _) => (rest, ListenAddress::udp),
                (None, Some(rest)) => (rest, ListenAddress::tcp),
                (None, None) => (text, ListenAddress::tcp),
            };
        let address = match text.parse::<u16>() {
            Ok(port) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
            Err(_) => text.parse::<SocketAddr>().map_err(|_| {
                format!(
                    "--listen {value}: expected PORT, IPv4:PORT or [IPv6]:PORT with numeric addresses \
                     (8080, 127.0.0.1:8080, [::]:8080), with udp: before it for UDP (udp:127.0.0.1:8053)"
                )
            })?,
        };
        let address = socket(address);
        if address.address.port() == 0 {
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
        let tcp = |a: &str| ListenAddress::tcp(a.parse().unwrap());
        assert_eq!(
            parsed,
            vec![tcp("[::]:8080"), tcp("127.0.0.1:81"), tcp("[::1]:82")]
        );
        assert!(parse_listen(&["0".into()]).is_err());
        assert!(parse_listen(&["localhost:80".into()]).is_err());
        assert!(parse_listen(&["80".into(), "[::]:80".into()]).is_err());
        assert!(parse_listen(&["80".into(), "tcp:[::]:80".into()]).is_err());
    }

    #[test]
    fn udp_addresses_are_written_as_systemd_users_know_them() {
        let udp = |a: &str| ListenAddress::udp(a.parse().unwrap());
        let tcp = |a: &str| ListenAddress::tcp(a.parse().unwrap());
        let parsed = parse_listen(&[
            "udp:127.0.0.1:8053".into(),
            "udp:53".into(),
            "53".into(),
            "udp:[::1]:54".into(),
            "tcp:127.0.0.1:8080".into(),
        ])
        .unwrap();
        assert_eq!(
            parsed,
            vec![
                udp("127.0.0.1:8053"),
                udp("[::]:53"),
                tcp("[::]:53"),
                udp("[::1]:54"),
                tcp("127.0.0.1:8080")
            ]
        );
        assert!(parse_listen(&["udp:53".into(), "udp:[::]:53".into()]).is_err());
        assert!(parse_listen(&["udp:0".into()]).is_err());
        let error = parse_listen(&["udp:localhost:53".into()]).unwrap_err();
        assert!(error.contains("udp:127.0.0.1:8053"), "{error}");
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
