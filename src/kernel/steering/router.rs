//! Steering for every reuseport group the workers listen in: one `SteeringGroup` (maps and program)
//! per local address, port, family and protocol (a TCP and a UDP socket on one address and port are
//! two groups to the kernel), fed with the serving sockets of the workers that should receive.
//! Invariant: a group's table only ever names sockets handed to the last `steer` call; a group none of
//! whose sockets is wanted any more falls back to the kernel's hash (it never refuses connections).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use log::{debug, warn};
use nix::sys::stat::fstat;
use nix::unistd::Pid;
use socket2::SockRef;

use super::group::{SteerError, SteeringGroup};
use super::strangers::{self, Stranger};

/// How often the port is looked at for listeners that are not the launcher's, besides after every
/// change of the receiving set: rarely, so an idle launcher stays idle.
const STRANGER_SCAN_INTERVAL: Duration = Duration::from_secs(60);

/// One reuseport group: sockets join the same group only with the same protocol, local address and
/// port (and family, which the address carries) and the same IPV6_V6ONLY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct GroupKey {
    address: SocketAddr,
    v6only: bool,
    /// UDP (SOCK_DGRAM) rather than TCP.
    datagram: bool,
}

impl GroupKey {
    fn of(socket: BorrowedFd<'_>) -> Option<GroupKey> {
        let socket = SockRef::from(&socket);
        let address = socket.local_addr().ok()?.as_socket()?;
        let v6only = address.is_ipv6() && socket.only_v6().unwrap_or(false);
        let datagram = socket.r#type().ok()? == socket2::Type::DGRAM;
        Some(GroupKey {
            address,
            v6only,
            datagram,
        })
    }
}

impl std::fmt::Display for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let protocol = if self.datagram { "udp" } else { "tcp" };
        write!(f, "{protocol} {}", self.address)
    }
}

pub struct Router {
    groups: HashMap<GroupKey, SteeringGroup>,
    /// Strangers already warned about, by pid: one warning each.
    warned: HashSet<i32>,
    /// When the port is next looked at for strangers.
    scan_due: Option<Instant>,
    /// Probes under way, by source port: the group that routes each.
    probes: HashMap<u16, GroupKey>,
    /// `--udp-flow-idle`: UDP groups keep flows with their socket for this long; None: off.
    flow_idle: Option<Duration>,
}

impl Router {
    pub fn new(flow_idle: Option<Duration>) -> Router {
        Router {
            groups: HashMap::new(),
            warned: HashSet::new(),
            scan_due: None,
            probes: HashMap::new(),
            flow_idle,
        }
    }

    /// A new group for `key`: with UDP flows when it is a UDP group and flows are on.
    fn new_group(&self, key: GroupKey) -> Result<SteeringGroup, SteerError> {
        match self.flow_idle {
            Some(idle) if key.datagram => SteeringGroup::with_flows(idle),
            _ => SteeringGroup::new(),
        }
    }

    /// Routes the connection from `source_port` to `listener`'s socket, receiving or not, until
    /// `end_probe`; creates and attaches the listener's group when nobody was steered to it yet.
    pub fn start_probe(
        &mut self,
        listener: BorrowedFd<'_>,
        source_port: u16,
    ) -> Result<(), String> {
        let key = GroupKey::of(listener).ok_or("the listener has no local address")?;
        let inode = fstat(listener.as_raw_fd())
            .map_err(|e| e.to_string())?
            .st_ino;
        let group = match self.groups.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(SteeringGroup::new().map_err(|e| e.to_string())?),
        };
        // (Probes are TCP connections: a probed listener's group never has flows.)
        group.attach(listener).map_err(|e| e.to_string())?;
        group
            .start_probe(source_port, inode, listener)
            .map_err(|e| e.to_string())?;
        self.probes.insert(source_port, key);
        Ok(())
    }

    /// Ends the routing `start_probe` set up for `source_port`.
    pub fn end_probe(&mut self, source_port: u16) {
        let Some(key) = self.probes.remove(&source_port) else {
            return;
        };
        if let Some(Err(why)) = self.groups.get_mut(&key).map(|g| g.end_probe(source_port)) {
            warn!(
                "unable to end the probe from port {source_port} on {}: {why}",
                key
            );
        }
    }

    /// Makes exactly `listeners` (the listening sockets of the workers that should receive) the
    /// receivers of their groups; in groups with UDP flows, `kept` (the other live workers'
    /// sockets) stay in the sockarray for their flows. Failures are logged and leave that group as it
    /// was: the workers keep serving, only the choice of worker falls back to the kernel.
    pub fn steer(&mut self, listeners: &[BorrowedFd<'_>], kept: &[BorrowedFd<'_>]) {
        let wanted = by_group(listeners);
        let kept = by_group(kept);
        for (key, sockets) in &wanted {
            if !self.groups.contains_key(key) {
                match self.new_group(*key) {
                    Ok(group) => drop(self.groups.insert(*key, group)),
                    Err(why) => {
                        warn!("unable to steer {key}: {why}; the kernel's hash chooses the worker there");
                        continue;
                    }
                }
            }
            let Some(group) = self.groups.get_mut(key) else {
                continue;
            };
            // The program belongs to the group, and a group re-created after all its sockets closed
            // needs it again: attach it to a socket of the group that is listening, every time.
            if let Err(why) = group.attach(sockets[0].1) {
                warn!("unable to attach the steering program to {}: {why}", key);
            }
            if group.has_flows() {
                if let Err(why) = group.keep(kept.get(key).map_or(&[], |k| &k[..])) {
                    warn!("unable to keep the flows of {key}: {why}");
                }
            }
            if let Err(why) = group.set_receiving(sockets) {
                warn!(
                    "unable to steer {} to {} listeners: {why}",
                    key,
                    sockets.len()
                );
            }
        }
        for (key, group) in &mut self.groups {
            if !wanted.contains_key(key) {
                if group.has_flows() {
                    if let Err(why) = group.keep(kept.get(key).map_or(&[], |k| &k[..])) {
                        warn!("unable to keep the flows of {key}: {why}");
                    }
                }
                if let Err(why) = group.set_receiving(&[]) {
                    warn!("unable to stop steering {key}: {why}");
                }
            }
        }
        self.scan_due = Some(Instant::now());
    }

    /// When a datagram of a flow on one of `sockets` was last routed (CLOCK_MONOTONIC ns), over
    /// the groups with UDP flows; None when none of their flows is remembered.
    pub fn flow_last_seen(&self, sockets: &[BorrowedFd<'_>]) -> Option<u64> {
        let mut latest = None;
        for (key, ids) in by_group(sockets) {
            let ids: Vec<u64> = ids.iter().map(|(id, _)| *id).collect();
            match self.groups.get(&key).map(|g| g.flow_last_seen(&ids)) {
                Some(Ok(seen)) => latest = latest.max(seen),
                Some(Err(why)) => warn!("unable to read the flows of {key}: {why}"),
                None => {}
            }
        }
        latest
    }

    /// How many flows on `sockets` are live at `now_ns` (CLOCK_MONOTONIC), over the groups with UDP
    /// flows; None when none of `sockets` is in such a group.
    pub fn live_flows(&self, sockets: &[BorrowedFd<'_>], now_ns: u64) -> Option<u32> {
        let mut total = None;
        for (key, ids) in by_group(sockets) {
            let ids: Vec<u64> = ids.iter().map(|(id, _)| *id).collect();
            match self.groups.get(&key).map(|g| g.live_flows(&ids, now_ns)) {
                Some(Ok(Some(live))) => total = Some(total.unwrap_or(0) + live),
                Some(Err(why)) => warn!("unable to read the flows of {key}: {why}"),
                _ => {}
            }
        }
        total
    }

    /// When `look_for_strangers` wants to run next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.scan_due
    }

    /// Whether `look_for_strangers` has work to do now.
    pub fn strangers_due(&self) -> bool {
        self.scan_due.is_some_and(|due| due <= Instant::now())
    }

    /// Warns once about every process that listens on a steered port (or has a UDP socket on a
    /// steered UDP port) without being a worker of this launcher (`is_ours` says which pids are;
    /// `known`: inodes of the workers' sockets): it gets no connection (datagram) while steering is on.
    pub fn look_for_strangers(&mut self, known: &HashSet<u64>, is_ours: impl Fn(Pid) -> bool) {
        self.scan_due = Some(Instant::now() + STRANGER_SCAN_INTERVAL);
        let ports = |datagram: bool| -> Vec<u16> {
            self.groups
                .keys()
                .filter(|k| k.datagram == datagram)
                .map(|k| k.address.port())
                .collect()
        };
        let (tcp_ports, udp_ports) = (ports(false), ports(true));
        for stranger in strangers::find(&tcp_ports, &udp_ports, known, is_ours) {
            if self.warned.insert(stranger.pid) {
                warn!("{}", describe(&stranger));
            }
        }
    }
}

/// `sockets` by their group, each with its inode.
fn by_group<'a>(sockets: &[BorrowedFd<'a>]) -> HashMap<GroupKey, Vec<(u64, BorrowedFd<'a>)>> {
    let mut groups: HashMap<GroupKey, Vec<(u64, BorrowedFd<'a>)>> = HashMap::new();
    for &socket in sockets {
        match (GroupKey::of(socket), fstat(socket.as_raw_fd())) {
            (Some(key), Ok(stat)) => groups.entry(key).or_default().push((stat.st_ino, socket)),
            _ => debug!("steering: a socket without a local address or inode; skipped"),
        }
    }
    groups
}

fn describe(stranger: &Stranger) -> String {
    let who = match stranger.other_launcher {
        Some(launcher) => format!(
            "pid {} ({}), a worker of another reuseport-launch (launcher pid {launcher}),",
            stranger.pid, stranger.command
        ),
        None => format!("pid {} ({})", stranger.pid, stranger.command),
    };
    if stranger.datagram {
        return format!(
            "{who} also has a UDP socket on port {} with SO_REUSEPORT; it gets no datagram while this \
             launcher steers the port (stop it, or give it a port of its own)",
            stranger.port
        );
    }
    format!(
        "{who} also listens on port {} with SO_REUSEPORT; it gets no new connection while this \
         launcher steers the port (stop it, or give it a port of its own)",
        stranger.port
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    use std::os::fd::AsFd;

    fn reuseport_socket(addr: SocketAddr, kind: Type, protocol: Protocol) -> Socket {
        let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol)).unwrap();
        socket.set_reuse_port(true).unwrap();
        socket.bind(&SockAddr::from(addr)).unwrap();
        socket
    }

    #[test]
    fn tcp_and_udp_on_one_port_are_two_groups() {
        if !nix::unistd::geteuid().is_root() {
            return eprintln!("skipping: loading BPF programs needs root (CAP_BPF, CAP_NET_ADMIN)");
        }
        let tcp = reuseport_socket("127.0.0.1:0".parse().unwrap(), Type::STREAM, Protocol::TCP);
        tcp.listen(16).unwrap();
        let addr = tcp.local_addr().unwrap().as_socket().unwrap();
        let udp = reuseport_socket(addr, Type::DGRAM, Protocol::UDP);
        let mut router = Router::new(None);
        router.steer(&[tcp.as_fd(), udp.as_fd()], &[]);
        let mut keys: Vec<String> = router.groups.keys().map(|k| k.to_string()).collect();
        keys.sort();
        assert_eq!(keys, [format!("tcp {addr}"), format!("udp {addr}")]);
        for group in router.groups.values() {
            assert_eq!(
                group.receiving().len(),
                1,
                "each group steers to its own socket"
            );
        }
    }
}
