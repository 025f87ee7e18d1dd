//! A raw `AF_PACKET` socket on one interface: whole Ethernet frames out and
//! in, for the ARP and neighbour-discovery packets the kernel will not send
//! for us.
//!
//! The socket is opened with protocol 0 (it receives nothing), then bound to
//! one interface and one EtherType, so it never sees frames from elsewhere.
//! It is non-blocking and driven by tokio's `AsyncFd`. Frames the host itself
//! sends are looped back to packet sockets as `PACKET_OUTGOING`; `recv`
//! drops them.

use super::{check_name, MacAddr, MissingCapability, NoSuchInterface};
use anyhow::Context as _;
use std::ffi::CString;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

// From <linux/if_packet.h>; stable kernel ABI.
const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_MR_MULTICAST: libc::c_ushort = 0;
const PACKET_OUTGOING: u8 = 4;

#[repr(C)]
struct PacketMreq {
    mr_ifindex: libc::c_int,
    mr_type: libc::c_ushort,
    mr_alen: libc::c_ushort,
    mr_address: [u8; 8],
}

pub(super) struct PacketSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: i32,
    ethertype: u16,
    pub(super) mac: MacAddr,
    interface: String,
}

/// `if_nametoindex`, with [`NoSuchInterface`] when it is not there.
fn ifindex(interface: &str) -> anyhow::Result<i32> {
    check_name(interface)?;
    let name = CString::new(interface).map_err(|_| NoSuchInterface {
        interface: interface.to_string(),
    })?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENODEV) {
            return Err(NoSuchInterface {
                interface: interface.to_string(),
            }
            .into());
        }
        return Err(err).with_context(|| format!("looking up interface {interface}"));
    }
    i32::try_from(index).with_context(|| format!("interface {interface} has index {index}"))
}

pub(super) fn mac_of(interface: &str) -> anyhow::Result<MacAddr> {
    check_name(interface)?;
    // SAFETY: plain socket(2); the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error())
            .context("opening a socket to ask for a MAC address");
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(interface.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads ifr_name and writes ifr_hwaddr in `req`,
    // which lives across the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR as _, &mut req) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENODEV) {
            return Err(NoSuchInterface {
                interface: interface.to_string(),
            }
            .into());
        }
        return Err(err).with_context(|| format!("reading the MAC address of {interface}"));
    }
    // SAFETY: the kernel filled the hwaddr member of the union.
    let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
    if hw.sa_family != libc::ARPHRD_ETHER {
        anyhow::bail!(
            "interface {interface} is not Ethernet (hardware type {}): it has no MAC address, \
             no ARP and no neighbour discovery, so the service address cannot be announced on it",
            hw.sa_family
        );
    }
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(hw.sa_data.iter()) {
        *dst = *src as u8;
    }
    Ok(MacAddr(mac))
}

fn sockaddr_ll(ifindex: i32, ethertype: u16, dest: Option<MacAddr>) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all zeroes is a valid value.
    let mut sa: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as libc::c_ushort;
    sa.sll_protocol = ethertype.to_be();
    sa.sll_ifindex = ifindex;
    if let Some(dest) = dest {
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&dest.0);
    }
    sa
}

impl PacketSocket {
    /// Opens a socket for frames of `ethertype` on `interface`. `purpose`
    /// ("sending gratuitous ARP on eth0") goes into the capability error.
    pub(super) fn open(interface: &str, ethertype: u16, purpose: &str) -> anyhow::Result<Self> {
        let ifindex = ifindex(interface)?;
        let mac = mac_of(interface)?;
        // SAFETY: plain socket(2); the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            let err = io::Error::last_os_error();
            if matches!(err.raw_os_error(), Some(libc::EPERM | libc::EACCES)) {
                return Err(MissingCapability {
                    action: purpose.to_string(),
                    capability: "CAP_NET_RAW",
                }
                .into());
            }
            return Err(err).context("opening a raw packet socket");
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let sa = sockaddr_ll(ifindex, ethertype, None);
        // SAFETY: `sa` is a valid sockaddr_ll and its size is passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("binding a raw packet socket to {interface}"));
        }
        // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open
        // and the same for as long as it is registered. (`register` needs
        // tokio 1.54; `AsyncFd::new` is deprecated there.)
        let fd = unsafe { AsyncFd::register(fd) }
            .map_err(|e| e.into_parts().1)
            .context("registering a raw packet socket with tokio")?;
        Ok(PacketSocket {
            fd,
            ifindex,
            ethertype,
            mac,
            interface: interface.to_string(),
        })
    }

    /// Also receive frames sent to the multicast MAC `group`, which the
    /// interface would otherwise filter out. Best effort: on a link that does
    /// not filter (veth, promiscuous) it makes no difference.
    pub(super) fn join_multicast(&self, group: MacAddr) -> io::Result<()> {
        let mut mr_address = [0u8; 8];
        mr_address[..6].copy_from_slice(&group.0);
        let mreq = PacketMreq {
            mr_ifindex: self.ifindex,
            mr_type: PACKET_MR_MULTICAST,
            mr_alen: 6,
            mr_address,
        };
        // SAFETY: `mreq` matches struct packet_mreq and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.get_ref().as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_ADD_MEMBERSHIP,
                (&mreq as *const PacketMreq).cast(),
                mem::size_of::<PacketMreq>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends one whole Ethernet frame; its first six bytes are the
    /// destination.
    pub(super) async fn send(&self, frame: &[u8]) -> anyhow::Result<()> {
        let dest = frame
            .get(..6)
            .and_then(|d| <[u8; 6]>::try_from(d).ok())
            .map(MacAddr)
            .context("frame shorter than an Ethernet header")?;
        let sa = sockaddr_ll(self.ifindex, self.ethertype, Some(dest));
        loop {
            let mut guard = self.fd.writable().await?;
            let sent = guard.try_io(|fd| {
                // SAFETY: `frame` and `sa` are valid for the lengths passed.
                let n = unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&sa as *const libc::sockaddr_ll).cast(),
                        mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n)
                }
            });
            match sent {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENETDOWN) => {
                    anyhow::bail!("interface {} is down", self.interface)
                }
                Ok(Err(e)) => {
                    return Err(e).with_context(|| format!("sending a frame on {}", self.interface))
                }
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives the next frame that came in from the wire (not one we sent),
    /// or `None` once `deadline` passes. Returns its length in `buf`.
    pub(super) async fn recv(
        &self,
        buf: &mut [u8],
        deadline: Instant,
    ) -> anyhow::Result<Option<usize>> {
        loop {
            // Checked here too: `timeout_at` never fires while frames keep
            // arriving, and a busy link must not make a probe last forever.
            if Instant::now() >= deadline {
                return Ok(None);
            }
            let Ok(guard) = tokio::time::timeout_at(deadline, self.fd.readable()).await else {
                return Ok(None);
            };
            let mut guard = guard?;
            let got = guard.try_io(|fd| {
                // SAFETY: sockaddr_ll is plain old data.
                let mut from: libc::sockaddr_ll = unsafe { mem::zeroed() };
                let mut from_len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: `buf` and `from` are valid for the lengths passed.
                let n = unsafe {
                    libc::recvfrom(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&mut from as *mut libc::sockaddr_ll).cast(),
                        &mut from_len,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok((n as usize, from.sll_pkttype))
                }
            });
            match got {
                Ok(Ok((_, PACKET_OUTGOING))) => continue,
                Ok(Ok((n, _))) => return Ok(Some(n.min(buf.len()))),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => {
                    return Err(e).with_context(|| format!("receiving on {}", self.interface))
                }
                Err(_would_block) => continue,
            }
        }
    }
}

/// How many probes [`probe`] sends, spread over the wait.
const PROBES: u32 = 3;

/// Sends `frames` (each round, in order) `count` times, `gap` apart.
pub(super) async fn announce(
    sock: &PacketSocket,
    frames: &[&[u8]],
    count: u32,
    gap: std::time::Duration,
) -> anyhow::Result<()> {
    for round in 0..count {
        if round > 0 {
            tokio::time::sleep(gap).await;
        }
        for frame in frames {
            sock.send(frame).await?;
        }
    }
    Ok(())
}

/// Sends `probe` [`PROBES`] times spread over `wait` (at 0, 1/3 and 2/3 of
/// it) and listens until `wait` is over. Each frame received goes to
/// `judge`, which returns the MAC of a host that claims the address; the
/// first such answer ends the probe.
pub(super) async fn probe(
    sock: &PacketSocket,
    probe: &[u8],
    wait: std::time::Duration,
    mut judge: impl FnMut(&[u8]) -> Option<MacAddr>,
) -> anyhow::Result<Option<MacAddr>> {
    let start = Instant::now();
    let deadline = start + wait;
    let mut sent = 0;
    // Jumbo frames are never ARP or neighbour discovery; longer frames are
    // truncated and then ignored by the parsers.
    let mut buf = [0u8; 2048];
    loop {
        let next_probe = (sent < PROBES).then(|| start + wait * sent / PROBES);
        if let Some(at) = next_probe {
            if at <= Instant::now() {
                sock.send(probe).await?;
                sent += 1;
                continue;
            }
        }
        let until = next_probe.map_or(deadline, |at| at.min(deadline));
        match sock.recv(&mut buf, until).await? {
            Some(n) => {
                if let Some(mac) = judge(&buf[..n]) {
                    return Ok(Some(mac));
                }
            }
            None if Instant::now() >= deadline && sent >= PROBES => return Ok(None),
            None => {}
        }
    }
}
