package integration

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// The gRPC tests use grpc's own health service for a protobuf unary call,
// and a hand-written service, portcullis.test.Echo, whose messages are raw
// bytes (content type application/grpc+raw), so that no generated code is
// needed: Echo (unary), Fail (unary, always NotFound) and Chat (a
// bidirectional stream that echoes each message).

// rawCodec passes *[]byte messages through unchanged.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "raw" }

func init() { encoding.RegisterCodec(rawCodec{}) }

const (
	echoService  = "portcullis.test.Echo"
	failMessage  = "no such widget: w42 (ünïcödé, 100%)" // grpc-message is percent-encoded on the wire
	chatMessages = 20
)

// rawUnary is a unary method of the echo service.
func rawUnary(name string, f func(context.Context, []byte) ([]byte, error)) grpc.MethodDesc {
	return grpc.MethodDesc{MethodName: name, Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
		var in []byte
		if err := dec(&in); err != nil {
			return nil, err
		}
		h := func(ctx context.Context, req any) (any, error) {
			out, err := f(ctx, *req.(*[]byte))
			if err != nil {
				return nil, err
			}
			return &out, nil
		}
		if icpt == nil {
			return h(ctx, &in)
		}
		return icpt(ctx, &in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/" + echoService + "/" + name}, h)
	}}
}

var echoDesc = grpc.ServiceDesc{
	ServiceName: echoService,
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{
		rawUnary("Echo", func(ctx context.Context, in []byte) ([]byte, error) {
			grpc.SetHeader(ctx, metadata.Pairs("x-test-header", "unary"))
			grpc.SetTrailer(ctx, metadata.Pairs("x-test-trailer", "unary"))
			return append([]byte("echo: "), in...), nil
		}),
		rawUnary("Fail", func(ctx context.Context, in []byte) ([]byte, error) {
			grpc.SetTrailer(ctx, metadata.Pairs("x-test-trailer", "fail"))
			return nil, status.Error(codes.NotFound, failMessage)
		}),
	},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Chat",
		ServerStreams: true,
		ClientStreams: true,
		Handler: func(srv any, ss grpc.ServerStream) error {
			if err := ss.SendHeader(metadata.Pairs("x-test-header", "chat")); err != nil {
				return err
			}
			n := 0
			for {
				var msg []byte
				err := ss.RecvMsg(&msg)
				if errors.Is(err, io.EOF) {
					ss.SetTrailer(metadata.Pairs("x-test-trailer", fmt.Sprint(n)))
					return nil
				}
				if err != nil {
					return err
				}
				n++
				out := append([]byte("echo: "), msg...)
				if err := ss.SendMsg(&out); err != nil {
					return err
				}
			}
		},
	}},
}

var chatDesc = &grpc.StreamDesc{StreamName: "Chat", ServerStreams: true, ClientStreams: true}

// grpcCall is what the gRPC server saw of one call.
type grpcCall struct {
	method    string
	tls       bool
	alpn, sni string
	forwarded []string // x-forwarded-for metadata
}

// startGRPC serves the health and echo services on 127.0.0.1:0, over TLS
// with the test certificate when tlsOn, else plaintext (HTTP/2 with prior
// knowledge: grpc-go speaks nothing else). Every call is reported on the
// returned channel.
func startGRPC(t *testing.T, tlsOn bool) (string, <-chan grpcCall) {
	t.Helper()
	calls := make(chan grpcCall, 64)
	record := func(ctx context.Context, method string) {
		c := grpcCall{method: method}
		if p, ok := peer.FromContext(ctx); ok {
			if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
				c.tls, c.alpn, c.sni = true, info.State.NegotiatedProtocol, info.State.ServerName
			}
		}
		md, _ := metadata.FromIncomingContext(ctx)
		c.forwarded = md.Get("x-forwarded-for")
		select {
		case calls <- c:
		default:
		}
	}
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			record(ctx, info.FullMethod)
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			record(ss.Context(), info.FullMethod)
			return h(srv, ss)
		}),
	}
	if tlsOn {
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{testCertificate(t)}})))
	}
	srv := grpc.NewServer(opts...)
	hs := health.NewServer()
	hs.SetServingStatus(echoService, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	srv.RegisterService(&echoDesc, struct{}{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), calls
}

// TestProtoGRPC proxies gRPC from a client on TLS (HTTP/2) to a gRPC
// server behind portcullis, reached with h2c and with TLS (protocol auto,
// which must negotiate h2): unary calls, a bidirectional stream whose
// messages go one at a time both ways, header and trailer metadata, and an
// error status with its message.
func TestProtoGRPC(t *testing.T) {
	for _, tc := range []struct {
		name     string
		tls      bool
		settings []string
	}{
		{"h2c", false, []string{"protocol: h2c"}},
		{"tls", true, []string{"tls: {ca: ca.pem, server_name: api.example.test}"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, calls := startGRPC(t, tc.tls)
			s, _ := startProxy(t, []proxyRoute{{"/", "grpc"}}, backendYAML("grpc", tc.settings, serverYAML(addr)))
			conn, err := grpc.NewClient("passthrough:///127.0.0.1:443",
				grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: s.pool, ServerName: "localhost"})))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), scaled(10*time.Second))
			defer cancel()

			// Each call must reach the server through portcullis, over the
			// backend's protocol.
			checkCall := func(method string) {
				t.Helper()
				c := recvWithin(t, calls, "the call "+method+" at the server")
				if c.method != method || len(c.forwarded) != 1 || c.forwarded[0] != "127.0.0.1" {
					t.Errorf("the server saw call %s with x-forwarded-for %q, want %s from portcullis", c.method, c.forwarded, method)
				}
				switch {
				case !tc.tls && c.tls:
					t.Errorf("%s: the server saw TLS, want h2c", method)
				case tc.tls && (!c.tls || c.alpn != "h2" || c.sni != "api.example.test"):
					t.Errorf("%s: the server saw TLS %v, ALPN %q, SNI %q; want TLS, h2, api.example.test", method, c.tls, c.alpn, c.sni)
				}
			}

			// Unary, protobuf: the health service.
			hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: echoService})
			if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("health Check: %v, %v; want SERVING", hr, err)
			}
			checkCall("/grpc.health.v1.Health/Check")

			// Unary with header and trailer metadata.
			in, out := []byte("hello"), []byte(nil)
			var header, trailer metadata.MD
			err = conn.Invoke(ctx, "/"+echoService+"/Echo", &in, &out, grpc.CallContentSubtype("raw"), grpc.Header(&header), grpc.Trailer(&trailer))
			if err != nil || string(out) != "echo: hello" {
				t.Fatalf("Echo: %q, %v; want %q", out, err, "echo: hello")
			}
			if h, tr := header.Get("x-test-header"), trailer.Get("x-test-trailer"); len(h) != 1 || h[0] != "unary" || len(tr) != 1 || tr[0] != "unary" {
				t.Errorf("Echo: header x-test-header %q, trailer x-test-trailer %q; want unary and unary", h, tr)
			}
			checkCall("/" + echoService + "/Echo")

			// An error status set by the server, with a trailer.
			trailer = nil
			err = conn.Invoke(ctx, "/"+echoService+"/Fail", &in, &out, grpc.CallContentSubtype("raw"), grpc.Trailer(&trailer))
			if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != failMessage {
				t.Errorf("Fail: got %v (code %v, message %q), want NotFound %q", err, st.Code(), st.Message(), failMessage)
			}
			if tr := trailer.Get("x-test-trailer"); len(tr) != 1 || tr[0] != "fail" {
				t.Errorf("Fail: trailer x-test-trailer %q, want fail", tr)
			}
			checkCall("/" + echoService + "/Fail")

			// Bidirectional stream: send one, receive its echo, before the
			// next. A proxy that buffered either direction would stall here
			// until the deadline.
			cs, err := conn.NewStream(ctx, chatDesc, "/"+echoService+"/Chat", grpc.CallContentSubtype("raw"))
			if err != nil {
				t.Fatal(err)
			}
			for i := range chatMessages {
				msg := []byte(fmt.Sprintf("message %d", i))
				if err := cs.SendMsg(&msg); err != nil {
					t.Fatalf("Chat: send %d: %v", i, err)
				}
				var got []byte
				if err := cs.RecvMsg(&got); err != nil {
					t.Fatalf("Chat: receive the echo of message %d before sending more: %v", i, err)
				}
				if want := "echo: " + string(msg); string(got) != want {
					t.Fatalf("Chat: got %q, want %q", got, want)
				}
			}
			if err := cs.CloseSend(); err != nil {
				t.Fatal(err)
			}
			var extra []byte
			if err := cs.RecvMsg(&extra); !errors.Is(err, io.EOF) {
				t.Fatalf("Chat: after CloseSend: %q, %v; want io.EOF (status OK)", extra, err)
			}
			h, _ := cs.Header()
			if got, tr := h.Get("x-test-header"), cs.Trailer().Get("x-test-trailer"); len(got) != 1 || got[0] != "chat" || len(tr) != 1 || tr[0] != fmt.Sprint(chatMessages) {
				t.Errorf("Chat: header x-test-header %q, trailer x-test-trailer %q; want chat and %d", got, tr, chatMessages)
			}
			checkCall("/" + echoService + "/Chat")
		})
	}
}
