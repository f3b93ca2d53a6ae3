package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Proc connector (cn_proc) event kinds, from include/uapi/linux/cn_proc.h.
const (
	procEventNone uint32 = 0x00000000 // the ack to a subscribe request
	ProcEventFork uint32 = 0x00000001
	ProcEventExec uint32 = 0x00000002
	ProcEventUID  uint32 = 0x00000004
	ProcEventGID  uint32 = 0x00000040
	ProcEventExit uint32 = 0x80000000
)

// ErrProcConnectorOverflow: the socket buffer overflowed and events were
// lost (ENOBUFS).
var ErrProcConnectorOverflow = errors.New("proc connector: events lost (ENOBUFS)")

// Layout: struct nlmsghdr (16) + struct cn_msg (20) + struct proc_event.
// Mirrors struct proc_event: what u32, cpu u32, timestamp_ns u64, then the
// event_data union at offset 16.
const (
	nlmsgHdrLen    = 16
	cnMsgLen       = 20
	procEvOff      = nlmsgHdrLen + cnMsgLen
	procEvWhat     = procEvOff + 0
	procEvData     = procEvOff + 16
	procEvMinLen   = procEvData + 16
	cnIdxProc      = 1
	cnValProc      = 1
	procCnMcastOn  = 1
	nlmsgDoneType  = 3
	nlmsgAlignment = 4
)

// ProcEvent is one decoded proc connector event about a process (thread
// group). Fields beyond Tgid are set per kind.
type ProcEvent struct {
	What       uint32
	Pid        int32 // the thread
	Tgid       int32 // the process
	ParentTgid int32 // fork: the parent process
	Real       uint32
	Effective  uint32 // uid/gid events
}

// DecodeProcEvents appends the events in one datagram to out. Thread
// creation (a fork whose child pid is not its tgid) is dropped: it creates
// no process.
func DecodeProcEvents(b []byte, out []ProcEvent) ([]ProcEvent, error) {
	ne := binary.NativeEndian
	for len(b) >= nlmsgHdrLen {
		l := int(ne.Uint32(b[0:]))
		if l < nlmsgHdrLen || l > len(b) {
			return out, fmt.Errorf("proc connector: nlmsg length %d of %d bytes", l, len(b))
		}
		msg := b[:l]
		if adv := (l + nlmsgAlignment - 1) &^ (nlmsgAlignment - 1); adv < len(b) {
			b = b[adv:]
		} else {
			b = nil
		}
		if len(msg) < procEvMinLen {
			continue // an ack or something too short to be an event
		}
		d := msg[procEvData:]
		ev := ProcEvent{What: ne.Uint32(msg[procEvWhat:])}
		switch ev.What {
		case ProcEventFork:
			// parent_pid, parent_tgid, child_pid, child_tgid
			ev.ParentTgid = int32(ne.Uint32(d[4:]))
			ev.Pid = int32(ne.Uint32(d[8:]))
			ev.Tgid = int32(ne.Uint32(d[12:]))
			if ev.Pid != ev.Tgid {
				continue
			}
		case ProcEventExec, ProcEventExit:
			ev.Pid = int32(ne.Uint32(d[0:]))
			ev.Tgid = int32(ne.Uint32(d[4:]))
		case ProcEventUID, ProcEventGID:
			if len(d) < 16 {
				return out, fmt.Errorf("proc connector: id event of %d bytes", len(d))
			}
			ev.Pid = int32(ne.Uint32(d[0:]))
			ev.Tgid = int32(ne.Uint32(d[4:]))
			ev.Real = ne.Uint32(d[8:])
			ev.Effective = ne.Uint32(d[12:])
		default:
			continue
		}
		out = append(out, ev)
	}
	return out, nil
}

// ProcConnector is a subscribed cn_proc netlink socket (needs
// CAP_NET_ADMIN and CONFIG_PROC_EVENTS).
type ProcConnector struct {
	fd  int
	buf []byte
}

// OpenProcConnector subscribes to process events. rcvbuf sizes the socket
// buffer; events that do not fit are lost and reported as
// ErrProcConnectorOverflow.
func OpenProcConnector(rcvbuf int) (*ProcConnector, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_CONNECTOR)
	if err != nil {
		return nil, fmt.Errorf("proc connector socket: %w", err)
	}
	p := &ProcConnector{fd: fd, buf: make([]byte, 64<<10)}
	if rcvbuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf); err != nil {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: cnIdxProc}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("proc connector bind: %w", err)
	}
	msg := make([]byte, procEvOff+4)
	ne := binary.NativeEndian
	ne.PutUint32(msg[0:], uint32(len(msg)))
	ne.PutUint16(msg[4:], nlmsgDoneType)
	ne.PutUint32(msg[12:], uint32(unix.Getpid()))
	ne.PutUint32(msg[nlmsgHdrLen+0:], cnIdxProc)
	ne.PutUint32(msg[nlmsgHdrLen+4:], cnValProc)
	ne.PutUint16(msg[nlmsgHdrLen+16:], 4)
	ne.PutUint32(msg[procEvOff:], procCnMcastOn)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("proc connector listen: %w", err)
	}
	if err := p.awaitAck(time.Second); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return p, nil
}

// awaitAck waits for the kernel's answer to the subscribe request. The send
// succeeds even when the kernel refuses it (EPERM without CAP_NET_ADMIN),
// and a requester outside the initial pid and user namespaces gets no answer
// and no events at all; either way no event would ever arrive, so the caller
// must hear about it now. Events that come before the ack are dropped: the
// subscription is only starting.
func (p *ProcConnector) awaitAck(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return errors.New("proc connector listen: no answer from the kernel (missing CAP_NET_ADMIN, or not in the initial pid and user namespaces)")
		}
		if err := p.Wait(left); err != nil {
			return err
		}
		n, _, err := unix.Recvfrom(p.fd, p.buf, 0)
		switch {
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR), errors.Is(err, unix.ENOBUFS):
			continue
		case err != nil:
			return fmt.Errorf("proc connector listen: %w", err)
		}
		if errno, ok := procAck(p.buf[:n]); ok {
			if errno != 0 {
				return fmt.Errorf("proc connector listen: %w", unix.Errno(errno))
			}
			return nil
		}
	}
}

// procAck finds the ack event (PROC_EVENT_NONE, whose event_data is
// struct { __u32 err; }) in one datagram.
func procAck(b []byte) (errno uint32, ok bool) {
	ne := binary.NativeEndian
	for len(b) >= nlmsgHdrLen {
		l := int(ne.Uint32(b[0:]))
		if l < nlmsgHdrLen || l > len(b) {
			return 0, false
		}
		if l >= procEvData+4 && ne.Uint32(b[procEvWhat:]) == procEventNone {
			return ne.Uint32(b[procEvData:]), true
		}
		adv := (l + nlmsgAlignment - 1) &^ (nlmsgAlignment - 1)
		if adv >= len(b) {
			return 0, false
		}
		b = b[adv:]
	}
	return 0, false
}

// Read appends every event queued now to out, without blocking.
func (p *ProcConnector) Read(out []ProcEvent) ([]ProcEvent, error) {
	for {
		n, _, err := unix.Recvfrom(p.fd, p.buf, 0)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return out, nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ENOBUFS):
			return out, ErrProcConnectorOverflow
		case err != nil:
			return out, fmt.Errorf("proc connector read: %w", err)
		}
		if out, err = DecodeProcEvents(p.buf[:n], out); err != nil {
			return out, err
		}
	}
}

// Wait blocks until events are queued or d passes.
func (p *ProcConnector) Wait(d time.Duration) error {
	_, err := unix.Poll([]unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}, int(d/time.Millisecond))
	if err != nil && !errors.Is(err, unix.EINTR) {
		return fmt.Errorf("proc connector poll: %w", err)
	}
	return nil
}

// Close closes the socket.
func (p *ProcConnector) Close() error {
	if err := unix.Close(p.fd); err != nil {
		return fmt.Errorf("proc connector close: %w", err)
	}
	return nil
}
