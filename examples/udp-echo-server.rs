//! `udp-echo-server`: the legacy UDP server of `scripts/bench-udp`. It binds one UDP socket on
//! `--host:--port` WITHOUT `SO_REUSEPORT` (the launcher's injection sets it), never sends `READY=1`
//! (the launcher counts it ready once the socket is bound), answers every datagram with the same bytes,
//! one `recv_from` and one `send_to` at a time, and dies at SIGTERM (no handler: the kernel's default
//! action), so whatever waits in its receive queue then is lost — the unchanged-server case.
//!
//! `--reuseport` sets `SO_REUSEPORT` itself, for the bench's reference pass of two servers sharing the
//! port without the launcher.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::ExitCode;

use clap::Parser;
use socket2::{Domain, Protocol, Socket, Type};

/// Largest datagram echoed whole; a longer one is echoed truncated.
const MAX_DATAGRAM_BYTES: usize = 65_536;

#[derive(Parser, Debug)]
#[command(
    name = "udp-echo-server",
    about = "Legacy UDP echo server for scripts/bench-udp"
)]
struct Args {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// UDP port to bind.
    #[arg(long)]
    port: u16,
    /// Set SO_REUSEPORT before bind (for several servers without the launcher).
    #[arg(long)]
    reuseport: bool,
}

fn bind(args: &Args) -> io::Result<UdpSocket> {
    let addr = SocketAddr::new(args.host, args.port);
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if args.reuseport {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let socket = match bind(&args) {
        Ok(socket) => socket,
        Err(e) => {
            let _ = writeln!(
                io::stderr(),
                "udp-echo-server: bind {}:{}: {e}",
                args.host,
                args.port
            );
            return ExitCode::FAILURE;
        }
    };
    let mut buffer = vec![0u8; MAX_DATAGRAM_BYTES];
    loop {
        match socket.recv_from(&mut buffer) {
            // A client that went away (ICMP port unreachable for an earlier answer) is no reason to stop.
            Ok((n, peer)) => {
                let _ = socket.send_to(&buffer[..n], peer);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = writeln!(io::stderr(), "udp-echo-server: recv_from: {e}");
            }
        }
    }
}
