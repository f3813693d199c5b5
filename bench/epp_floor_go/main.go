// A compiled floor for the endpoint picker benchmark: the same do-nothing ext_proc servicer as
// bench/epp_floor.py (route every request to one upstream, echo the bodies, pass the response through),
// in Go with grpc-go, TLS with a self-signed certificate by default. bench/epp_overhead.py --go-floor
// builds and runs it, to show what Envoy's ext_proc round trips cost when the servicer is not Python.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"io"
	"log"
	"math/big"
	"net"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extproc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/structpb"
)

const destination = "x-gateway-destination-endpoint"

type floor struct {
	extproc.UnimplementedExternalProcessorServer
	upstream string
}

func (f *floor) route() *extproc.ProcessingResponse {
	meta, _ := structpb.NewStruct(map[string]any{"envoy.lb": map[string]any{destination: f.upstream}})
	header := &core.HeaderValueOption{
		Header:       &core.HeaderValue{Key: destination, RawValue: []byte(f.upstream)},
		AppendAction: core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
	common := &extproc.CommonResponse{
		HeaderMutation:  &extproc.HeaderMutation{SetHeaders: []*core.HeaderValueOption{header}},
		ClearRouteCache: true,
	}
	return &extproc.ProcessingResponse{
		Response:        &extproc.ProcessingResponse_RequestHeaders{RequestHeaders: &extproc.HeadersResponse{Response: common}},
		DynamicMetadata: meta,
	}
}

func streamed(body []byte, end bool) *extproc.CommonResponse {
	return &extproc.CommonResponse{BodyMutation: &extproc.BodyMutation{
		Mutation: &extproc.BodyMutation_StreamedResponse{
			StreamedResponse: &extproc.StreamedBodyResponse{Body: body, EndOfStream: end},
		},
	}}
}

func (f *floor) answer(req *extproc.ProcessingRequest, body *[]byte) []*extproc.ProcessingResponse {
	switch v := req.Request.(type) {
	case *extproc.ProcessingRequest_RequestHeaders:
		if v.RequestHeaders.EndOfStream {
			return []*extproc.ProcessingResponse{f.route()}
		}
	case *extproc.ProcessingRequest_RequestBody:
		*body = append(*body, v.RequestBody.Body...)
		if v.RequestBody.EndOfStream {
			echo := &extproc.ProcessingResponse{Response: &extproc.ProcessingResponse_RequestBody{
				RequestBody: &extproc.BodyResponse{Response: streamed(*body, true)},
			}}
			return []*extproc.ProcessingResponse{f.route(), echo}
		}
	case *extproc.ProcessingRequest_ResponseHeaders:
		return []*extproc.ProcessingResponse{{Response: &extproc.ProcessingResponse_ResponseHeaders{
			ResponseHeaders: &extproc.HeadersResponse{},
		}}}
	case *extproc.ProcessingRequest_ResponseBody:
		return []*extproc.ProcessingResponse{{Response: &extproc.ProcessingResponse_ResponseBody{
			ResponseBody: &extproc.BodyResponse{Response: streamed(v.ResponseBody.Body, v.ResponseBody.EndOfStream)},
		}}}
	}
	return nil
}

func (f *floor) Process(stream extproc.ExternalProcessor_ProcessServer) error {
	var body []byte
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, resp := range f.answer(req, &body) {
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
	}
}

func selfSigned() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "epp-floor"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func main() {
	port := flag.String("grpc-port", "9002", "ext_proc port on 127.0.0.1")
	upstream := flag.String("upstream", "", "host:port every request goes to")
	plaintext := flag.Bool("plaintext", false, "no TLS")
	flag.Parse()
	if *upstream == "" {
		log.Fatal("--upstream is required")
	}
	var opts []grpc.ServerOption
	if !*plaintext {
		cfg := &tls.Config{Certificates: []tls.Certificate{selfSigned()}, NextProtos: []string{"h2"}}
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	lis, err := net.Listen("tcp", "127.0.0.1:"+*port)
	if err != nil {
		log.Fatal(err)
	}
	server := grpc.NewServer(opts...)
	extproc.RegisterExternalProcessorServer(server, &floor{upstream: *upstream})
	log.Fatal(server.Serve(lis))
}
