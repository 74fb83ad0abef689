// Package certs holds the TLS certificates spooky serves: a Store of
// certificate and key pairs read from files, chosen per handshake by SNI and
// reloaded atomically (store.go), and the self-signed development
// certificate served when it is given none.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"time"
)

const devCommonName = "spooky dev certificate"

// Dev makes a self-signed certificate, in memory, for localhost,
// 127.0.0.1 and ::1, valid for a day. It is what spooky serves when
// listen.tls is not set, and what the bench tools serve; no client trusts it
// without being told to.
func Dev() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: devCommonName},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// IsDev reports whether cert is one Dev made; a reload that still has no
// listen.tls keeps it rather than make another.
func IsDev(cert *tls.Certificate) bool {
	return cert.Leaf != nil && cert.Leaf.Subject.CommonName == devCommonName
}
