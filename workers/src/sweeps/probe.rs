//! The probes a poller runs: a TCP connect scan of one port, and ICMP echo when the process
//! may open an ICMP socket (see [`icmp_capability`]).

use std::collections::hash_map::{Entry, HashMap, RandomState};
use std::hash::{BuildHasher, Hasher};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::oneshot;

/// What a TCP connect to one port gave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PortState {
    /// The connect succeeded after this long (the connection is dropped at once).
    Open(Duration),
    /// The host refused the connection.
    Closed,
    /// No answer within the timeout, or another error (unreachable, filtered).
    TimedOut,
}

/// Connects to `addr:port`, waiting at most `timeout`: open on success, closed on
/// connection refused, timed out otherwise.
pub async fn tcp_probe(addr: IpAddr, port: u16, timeout: Duration) -> PortState {
    let started = Instant::now();
    let target = SocketAddr::new(addr, port);
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(target)).await {
        Ok(Ok(stream)) => {
            let elapsed = started.elapsed();
            drop(stream);
            PortState::Open(elapsed)
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => PortState::Closed,
        Ok(Err(e)) => {
            tracing::trace!(error = %e, sweep.host = %addr, sweep.port = port, "connect failed");
            PortState::TimedOut
        }
        Err(_) => PortState::TimedOut,
    }
}

/// Why an ICMP echo could not be tried.
#[derive(Debug, thiserror::Error)]
pub enum IcmpError {
    /// This process cannot open an ICMP socket for the address's family (see
    /// [`icmp_capability`] and [`icmp_supported`]).
    #[error("ICMP echo is not supported by this poller for this address family")]
    Unsupported,
    /// Every sequence number towards this host is waiting for a reply already.
    #[error("too many ICMP echo requests in flight to this host")]
    Busy,
    /// The kernel refused the echo request (e.g. a broadcast address).
    #[error("could not send the ICMP echo request: {0}")]
    Send(#[source] std::io::Error),
}

/// Whether this poller can send ICMP echo requests to IPv4 hosts: what the heartbeat's `icmp`
/// says.
///
/// The first call tries to open an ICMP socket: an unprivileged "ping socket"
/// (`SOCK_DGRAM`/`IPPROTO_ICMP`, which Linux allows when the process's group is in
/// `net.ipv4.ping_group_range`), else a raw one (`SOCK_RAW`, root or `CAP_NET_RAW`). The answer
/// (and the socket) is kept for the life of the process. Without either, hosts get
/// `icmp_available: None` (unknown), never a made-up answer.
pub fn icmp_capability() -> bool {
    pinger(false).is_some()
}

/// Whether [`icmp_echo`] can be tried for `addr`: IPv4 as [`icmp_capability`], IPv6 if an
/// ICMPv6 socket could be opened the same way.
pub fn icmp_supported(addr: IpAddr) -> bool {
    pinger(addr.to_canonical().is_ipv6()).is_some()
}

/// Sends one ICMP echo request to `addr` and waits at most `timeout` for its reply: the
/// round trip on a reply, `Ok(None)` without one (or when the kernel says the host is
/// unreachable). [`IcmpError::Unsupported`] when this process cannot send ICMP echo to this
/// address family.
pub async fn icmp_echo(addr: IpAddr, timeout: Duration) -> Result<Option<Duration>, IcmpError> {
    let addr = addr.to_canonical();
    let pinger = pinger(addr.is_ipv6()).ok_or(IcmpError::Unsupported)?;
    pinger.echo(addr, timeout).await
}

/// The ICMP socket of one address family, opened once per process.
fn pinger(v6: bool) -> Option<&'static Pinger> {
    static V4: OnceLock<Option<Pinger>> = OnceLock::new();
    static V6: OnceLock<Option<Pinger>> = OnceLock::new();
    let cell = if v6 { &V6 } else { &V4 };
    cell.get_or_init(|| match Pinger::open(v6) {
        Ok(pinger) => {
            tracing::info!(
                icmp.v6 = v6,
                icmp.socket = pinger.shared.kind.name(),
                "ICMP echo available"
            );
            Some(pinger)
        }
        Err(e) => {
            tracing::info!(icmp.v6 = v6, error = %e, "ICMP echo unavailable");
            None
        }
    })
    .as_ref()
}

/// The magic start of every echo request's payload; a per-process token follows.
const PAYLOAD_MAGIC: &[u8; 8] = b"corral.p";
/// The longest a send may block (the socket's send buffer full).
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// How the ICMP socket was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SocketKind {
    /// An unprivileged ping socket: the kernel picks the identifier (and fills in the
    /// checksum), and only our own replies are delivered, without their IP header.
    Dgram,
    /// A raw socket: every ICMP packet the host receives is delivered; IPv4 ones with their IP
    /// header, IPv6 ones without.
    Raw,
}

impl SocketKind {
    fn name(self) -> &'static str {
        match self {
            SocketKind::Dgram => "dgram",
            SocketKind::Raw => "raw",
        }
    }
}

/// A waiting probe's key: the host and the sequence number of its request.
type WaitKey = (IpAddr, u16);

/// What the receiver thread shares with the probes.
struct Shared {
    v6: bool,
    kind: SocketKind,
    /// The identifier of our requests (raw sockets only: ping sockets rewrite it).
    ident: u16,
    /// Every request's payload: [`PAYLOAD_MAGIC`] and this process's token.
    payload: [u8; 16],
    next_seq: AtomicU16,
    /// The probes waiting for a reply, each told when it came.
    waiting: Mutex<HashMap<WaitKey, oneshot::Sender<Instant>>>,
}

/// One ICMP socket and its receiver thread, which hands each matching echo reply to the
/// probe waiting for it.
struct Pinger {
    /// The ICMP socket, held as a `UdpSocket` only for its safe `send_to`/`recv_from` (the
    /// system calls are the same for any datagram or raw socket).
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
}

impl Pinger {
    fn open(v6: bool) -> std::io::Result<Pinger> {
        let (domain, protocol) = if v6 {
            (Domain::IPV6, Protocol::ICMPV6)
        } else {
            (Domain::IPV4, Protocol::ICMPV4)
        };
        let (socket, kind) = match Socket::new(domain, Type::DGRAM, Some(protocol)) {
            Ok(socket) => (socket, SocketKind::Dgram),
            Err(dgram) => match Socket::new(domain, Type::RAW, Some(protocol)) {
                Ok(socket) => (socket, SocketKind::Raw),
                Err(raw) => {
                    return Err(std::io::Error::new(
                        raw.kind(),
                        format!("no ping socket ({dgram}) and no raw socket ({raw})"),
                    ))
                }
            },
        };
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        let socket = UdpSocket::from(socket);
        let receiver = socket.try_clone()?;
        let token = process_token();
        let mut payload = [0u8; 16];
        payload[..8].copy_from_slice(PAYLOAD_MAGIC);
        payload[8..].copy_from_slice(&token.to_be_bytes());
        let shared = Arc::new(Shared {
            v6,
            kind,
            ident: (u64::from(std::process::id()) ^ token) as u16,
            payload,
            next_seq: AtomicU16::new(token.rotate_right(16) as u16),
            waiting: Mutex::new(HashMap::new()),
        });
        let for_thread = shared.clone();
        std::thread::Builder::new()
            .name(format!("corral-icmp{}", if v6 { "6" } else { "4" }))
            .spawn(move || receive_loop(&receiver, &for_thread))?;
        Ok(Pinger {
            socket: Arc::new(socket),
            shared,
        })
    }

    async fn echo(&self, addr: IpAddr, timeout: Duration) -> Result<Option<Duration>, IcmpError> {
        let (tx, rx) = oneshot::channel();
        let waiter = self.shared.register(addr, tx)?;
        let packet = echo_request(
            self.shared.v6,
            self.shared.ident,
            waiter.key.1,
            &self.shared.payload,
        );
        let socket = self.socket.clone();
        // A send rarely blocks, but may while the socket's buffer is full: off the runtime.
        let sent = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            socket
                .send_to(&packet, SocketAddr::new(addr, 0))
                .map(|_| started)
        })
        .await
        .map_err(|e| IcmpError::Send(std::io::Error::other(e)))?;
        let started = match sent {
            Ok(started) => started,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(IcmpError::Send(e)),
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(at)) => Ok(Some(at.saturating_duration_since(started))),
            Ok(Err(_)) | Err(_) => Ok(None),
        }
    }
}

impl Shared {
    /// Registers a waiter for `addr` under a sequence number no other probe of `addr` waits on.
    fn register(
        self: &Arc<Self>,
        addr: IpAddr,
        tx: oneshot::Sender<Instant>,
    ) -> Result<Waiter, IcmpError> {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        for _ in 0..=u16::MAX {
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            if let Entry::Vacant(slot) = waiting.entry((addr, seq)) {
                slot.insert(tx);
                return Ok(Waiter {
                    shared: self.clone(),
                    key: (addr, seq),
                });
            }
        }
        Err(IcmpError::Busy)
    }

    /// Hands a received packet to the probe it answers, if any.
    fn dispatch(&self, packet: &[u8], from: IpAddr, at: Instant) {
        let Some(reply) = parse_echo_reply(self.v6, self.has_ip_header(), packet) else {
            return;
        };
        if (self.kind == SocketKind::Raw && reply.ident != self.ident)
            || reply.payload != self.payload
        {
            return;
        }
        let waiter = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(from.to_canonical(), reply.seq));
        if let Some(tx) = waiter {
            let _ = tx.send(at);
        }
    }

    fn has_ip_header(&self) -> bool {
        self.kind == SocketKind::Raw && !self.v6
    }
}

/// A registered waiter, removed when the probe ends (also when it is cancelled).
struct Waiter {
    shared: Arc<Shared>,
    key: WaitKey,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.shared
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

/// The receiver thread: reads the socket for the life of the process.
fn receive_loop(socket: &UdpSocket, shared: &Shared) {
    let mut buf = [0u8; 2048];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((len, from)) => shared.dispatch(&buf[..len], from.ip(), Instant::now()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(error = %e, icmp.v6 = shared.v6, "cannot read the ICMP socket");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// A token telling this process's echo requests from any other's.
fn process_token() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// The Internet checksum (RFC 1071) of `data`: the one's complement of the one's complement
/// sum of its big-endian 16-bit words (an odd last byte padded with zero). Over a packet
/// with a correct checksum in it, this gives 0.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w.get(1).copied().unwrap_or(0)])))
        .fold(0u32, |acc, w| {
            let s = acc + w;
            (s & 0xffff) + (s >> 16)
        });
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP (type 8) or ICMPv6 (type 128) echo request. The ICMPv6 checksum covers a
/// pseudo-header the kernel knows and we do not: left zero for the kernel to fill in (it does
/// for every ICMPv6 socket); the ICMP one is computed here (a ping socket recomputes it after
/// setting its identifier).
fn echo_request(v6: bool, ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(8 + payload.len());
    packet.extend_from_slice(&[if v6 { 128 } else { 8 }, 0, 0, 0]);
    packet.extend_from_slice(&ident.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(payload);
    if !v6 {
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

/// The parts of an echo reply a probe is matched on.
#[derive(Debug, PartialEq, Eq)]
struct EchoReply<'a> {
    ident: u16,
    seq: u16,
    payload: &'a [u8],
}

/// The echo reply (ICMP type 0, ICMPv6 type 129) in `packet`, after its IPv4 header if
/// `with_ip_header`; `None` for anything else (other types, truncated, bad ICMP checksum).
fn parse_echo_reply(v6: bool, with_ip_header: bool, packet: &[u8]) -> Option<EchoReply<'_>> {
    let icmp = if with_ip_header {
        let first = *packet.first()?;
        let header_len = usize::from(first & 0x0f) * 4;
        if first >> 4 != 4 || header_len < 20 {
            return None;
        }
        packet.get(header_len..)?
    } else {
        packet
    };
    let reply_type = if v6 { 129 } else { 0 };
    if icmp.len() < 8 || icmp[0] != reply_type || icmp[1] != 0 {
        return None;
    }
    // The ICMPv6 checksum needs the pseudo-header; the kernel checked it.
    if !v6 && checksum(icmp) != 0 {
        return None;
    }
    Some(EchoReply {
        ident: u16::from_be_bytes([icmp[4], icmp[5]]),
        seq: u16::from_be_bytes([icmp[6], icmp[7]]),
        payload: &icmp[8..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_open_port_is_open_and_a_closed_one_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let localhost: IpAddr = "127.0.0.1".parse().expect("ip");
        let state = tcp_probe(localhost, port, Duration::from_secs(2)).await;
        assert!(matches!(state, PortState::Open(_)), "{state:?}");

        // A port that was just freed: nothing listens there any more.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let closed_port = closed.local_addr().expect("addr").port();
        drop(closed);
        let state = tcp_probe(localhost, closed_port, Duration::from_secs(2)).await;
        assert_eq!(state, PortState::Closed);
        drop(listener);
    }

    #[test]
    fn the_checksum_is_rfc_1071() {
        // RFC 1071's example: the sum is ddf2, its complement 220d.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        // An odd length pads with zero.
        assert_eq!(checksum(&[0x01]), !0x0100);
        assert_eq!(checksum(&[]), 0xffff);
        // Carries wrap around.
        assert_eq!(checksum(&[0xff, 0xff, 0x00, 0x01]), !0x0001);
    }

    #[test]
    fn echo_requests_are_built_and_replies_parsed() {
        let v4 = echo_request(false, 0x0001, 0x0001, &[]);
        assert_eq!(v4, [8, 0, 0xf7, 0xfd, 0, 1, 0, 1]);
        let v4 = echo_request(false, 0xbeef, 0x1234, b"payload");
        assert_eq!(&v4[..2], [8, 0]);
        assert_eq!(&v4[4..8], [0xbe, 0xef, 0x12, 0x34]);
        assert_eq!(&v4[8..], b"payload");
        assert_eq!(checksum(&v4), 0, "a correct checksum sums to zero");
        // ICMPv6: the kernel fills in the checksum.
        let v6 = echo_request(true, 7, 9, b"x");
        assert_eq!(v6, [128, 0, 0, 0, 0, 7, 0, 9, b'x']);

        // The reply: type 0, the same identifier, sequence and payload.
        let mut reply = v4.clone();
        reply[0] = 0;
        reply[2..4].copy_from_slice(&[0, 0]);
        let sum = checksum(&reply);
        reply[2..4].copy_from_slice(&sum.to_be_bytes());
        let expected = EchoReply {
            ident: 0xbeef,
            seq: 0x1234,
            payload: b"payload",
        };
        assert_eq!(parse_echo_reply(false, false, &reply), Some(expected));
        // With an IPv4 header in front (a raw socket), 24 bytes long (IHL 6).
        let mut with_header = vec![0x46];
        with_header.resize(24, 0);
        with_header.extend_from_slice(&reply);
        let parsed = parse_echo_reply(false, true, &with_header).expect("reply");
        assert_eq!((parsed.ident, parsed.seq), (0xbeef, 0x1234));
        assert_eq!(parsed.payload, b"payload");
        // Not replies: our own request, a bad checksum, truncated, a bad IP header.
        assert_eq!(parse_echo_reply(false, false, &v4), None);
        let mut corrupt = reply.clone();
        corrupt[9] ^= 1;
        assert_eq!(parse_echo_reply(false, false, &corrupt), None);
        assert_eq!(parse_echo_reply(false, false, &reply[..7]), None);
        assert_eq!(parse_echo_reply(false, true, &reply), None);
        assert_eq!(parse_echo_reply(false, true, &[]), None);
        // ICMPv6 echo reply: type 129.
        let v6_reply = [129, 0, 0x12, 0x34, 0, 7, 0, 9, b'x'];
        let parsed = parse_echo_reply(true, false, &v6_reply).expect("v6 reply");
        assert_eq!(
            (parsed.ident, parsed.seq, parsed.payload),
            (7, 9, &b"x"[..])
        );
        assert_eq!(parse_echo_reply(true, false, &v6), None);
    }

    #[test]
    fn replies_go_to_the_probe_waiting_for_them() {
        let mut payload = [0u8; 16];
        payload[..8].copy_from_slice(PAYLOAD_MAGIC);
        let shared = Arc::new(Shared {
            v6: false,
            kind: SocketKind::Raw,
            ident: 42,
            payload,
            next_seq: AtomicU16::new(u16::MAX),
            waiting: Mutex::new(HashMap::new()),
        });
        let host: IpAddr = "192.0.2.7".parse().expect("ip");
        let other: IpAddr = "192.0.2.8".parse().expect("ip");
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        let first = shared.register(host, tx1).expect("register");
        let second = shared.register(host, tx2).expect("register");
        assert_eq!(first.key, (host, u16::MAX));
        assert_eq!(second.key, (host, 0), "the sequence wraps");

        let reply_to = |ident: u16, seq: u16, payload: &[u8]| {
            let mut packet = echo_request(false, ident, seq, payload);
            packet[0] = 0;
            packet[2..4].copy_from_slice(&[0, 0]);
            let sum = checksum(&packet);
            packet[2..4].copy_from_slice(&sum.to_be_bytes());
            let mut with_header = vec![0x45];
            with_header.resize(20, 0);
            with_header.extend_from_slice(&packet);
            with_header
        };
        let now = Instant::now();
        // Another host, identifier or payload, or a sequence nobody waits for: ignored.
        shared.dispatch(&reply_to(42, 0, &payload), other, now);
        shared.dispatch(&reply_to(43, 0, &payload), host, now);
        shared.dispatch(&reply_to(42, 0, b"someone else's"), host, now);
        shared.dispatch(&reply_to(42, 1, &payload), host, now);
        assert!(rx1.try_recv().is_err() && rx2.try_recv().is_err());
        // The second probe's reply.
        shared.dispatch(&reply_to(42, 0, &payload), host, now);
        assert_eq!(rx2.try_recv().expect("the reply"), now);
        assert!(rx1.try_recv().is_err());
        // A probe that ends stops waiting.
        drop(first);
        drop(second);
        assert!(shared.waiting.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn loopback_answers_icmp_echo_when_privileged() {
        let localhost: IpAddr = "127.0.0.1".parse().expect("ip");
        if !icmp_capability() {
            assert!(!icmp_supported(localhost));
            let echo = icmp_echo(localhost, Duration::from_millis(10)).await;
            assert!(matches!(echo, Err(IcmpError::Unsupported)), "{echo:?}");
            return;
        }
        assert!(icmp_supported(localhost));
        let took = icmp_echo(localhost, Duration::from_secs(2))
            .await
            .expect("echo")
            .expect("a reply from 127.0.0.1");
        assert!(took < Duration::from_secs(2), "{took:?}");
        // All of 127.0.0.0/8 answers; many probes at once each get their own reply.
        let hosts: Vec<IpAddr> = (1..=40u8)
            .flat_map(|i| [IpAddr::from([127, 0, 0, i]), IpAddr::from([127, 0, 0, 1])])
            .collect();
        let echoes = futures::future::join_all(
            hosts
                .iter()
                .map(|&host| icmp_echo(host, Duration::from_secs(2))),
        )
        .await;
        for (host, echo) in hosts.iter().zip(echoes) {
            assert!(matches!(echo, Ok(Some(_))), "{host}: {echo:?}");
        }
        // The IPv4-mapped form is the same host.
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("ip");
        assert!(matches!(
            icmp_echo(mapped, Duration::from_secs(2)).await,
            Ok(Some(_))
        ));
        // TEST-NET-2 (RFC 5737) is never routed: no reply.
        let nowhere: IpAddr = "198.51.100.1".parse().expect("ip");
        let echo = icmp_echo(nowhere, Duration::from_millis(300)).await;
        assert!(matches!(echo, Ok(None)), "{echo:?}");
    }

    #[tokio::test]
    async fn ipv6_loopback_answers_icmpv6_echo_when_privileged() {
        let localhost: IpAddr = "::1".parse().expect("ip");
        if !icmp_supported(localhost) {
            let echo = icmp_echo(localhost, Duration::from_millis(10)).await;
            assert!(matches!(echo, Err(IcmpError::Unsupported)), "{echo:?}");
            return;
        }
        let has_loopback_v6 = std::net::UdpSocket::bind("[::1]:0").is_ok();
        let echo = icmp_echo(localhost, Duration::from_secs(2)).await;
        if has_loopback_v6 {
            assert!(matches!(echo, Ok(Some(_))), "{echo:?}");
        }
    }
}
