// Package seal owns sealing of the record stream a sink writes: a
// forward-secure, keyed hash chain over the exact bytes of every line, in
// write order, closed at intervals by seal records that are MACed under an
// epoch key which then evolves through a one-way function. It owns the
// seal record's format, the state file, the Sealer a sink drives and the
// Verifier behind `fanaudit verify`. docs/sealing.md explains the
// construction and its threat model.
//
// Construction (version 1):
//
//	k_0                = the verification key (32 random bytes)
//	k_{e+1}            = HMAC-SHA256(k_e, "fanaudit-seal-evolve")
//	mac key of epoch e = HMAC-SHA256(k_e, "fanaudit-seal-mac")
//	block key of e     = HMAC-SHA256(k_e, "fanaudit-seal-block") (AES-256-GCM)
//	block              = up to BlockLines consecutive record lines, each with its '\n'
//	tag_j              = GMAC(block key, nonce = j, block bytes) for the j-th block of the epoch
//	head               = SHA256('b' || head || tag_j) after each block
//	seal line S        = JSON with head, counts, marks, ending in "mac":"HMAC(mac key, S up to the MAC)"
//	head               = SHA256('s' || head || S) after each seal line
//
// GMAC carries the bulk of the bytes because it runs at several GB/s with
// AES-NI, where SHA-256 runs at a fraction of that: sealing must stay
// within a few per cent of the agent's CPU.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

const (
	// Version is the seal record's format version.
	Version = 1
	// KeySize is the size of the verification key and every epoch key.
	KeySize = 32
	// BlockLines is how many lines one GMAC block covers; a block also
	// ends at a seal. It bounds how precisely a changed record is located.
	BlockLines = 16
	// maxMarks bounds the marks a seal carries: past it, marks thin out
	// to every second one (see Sealer).
	maxMarks = 256
	markSize = 4
)

// Labels of the key derivations.
const (
	labelEvolve = "fanaudit-seal-evolve"
	labelMAC    = "fanaudit-seal-mac"
	labelBlock  = "fanaudit-seal-block"
	labelID     = "fanaudit-seal-id"
)

// Kinds of seal record.
const (
	KindOpen     = "open"     // written when a sink starts; covers what an unclean stop left unsealed
	KindInterval = "interval" // every seal_interval and before a rotation
	KindClose    = "close"    // written at a clean stop
)

// Key is a 32-byte secret: the verification key k_0 or an epoch key.
type Key [KeySize]byte

// ParseKey parses the hex form that seal-keygen prints.
func ParseKey(s string) (Key, error) {
	var k Key
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != KeySize {
		return k, fmt.Errorf("a key is %d hex digits", 2*KeySize)
	}
	copy(k[:], b)
	return k, nil
}

// String returns the key in hex.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// ID returns the key id of a verification key: a public fingerprint that
// seal records carry, so a verifier can tell a wrong key from a forgery.
func (k *Key) ID() string {
	m := hmacSum(k, labelID)
	return hex.EncodeToString(m[:8])
}

func hmacSum(k *Key, label string) [32]byte {
	m := hmac.New(sha256.New, k[:])
	m.Write([]byte(label))
	var out [32]byte
	m.Sum(out[:0])
	return out
}

// evolve replaces k with the next epoch key and wipes the old one.
func (k *Key) evolve() {
	next := hmacSum(k, labelEvolve)
	*k = next
	clear(next[:])
}

// epochKey derives k_epoch from the verification key.
func epochKey(k0 Key, epoch uint64) Key {
	k := k0
	for range epoch {
		k.evolve()
	}
	return k
}

func macKey(k *Key) [32]byte { return hmacSum(k, labelMAC) }

func blockAEAD(k *Key) (cipher.AEAD, error) {
	bk := hmacSum(k, labelBlock)
	defer clear(bk[:])
	c, err := aes.NewCipher(bk[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(c)
}

// blockNonce is the GCM nonce of the j-th block of an epoch: unique per
// block key, as GMAC requires.
func blockNonce(j uint64, n *[12]byte) {
	for i := 7; i >= 0; i-- {
		n[i] = byte(j)
		j >>= 8
	}
}

// chainBlock folds a block tag (16 bytes) into the head: one SHA-256
// compression, from an array on the stack.
func chainBlock(head *[32]byte, tag []byte) {
	var b [1 + 32 + 16]byte
	b[0] = 'b'
	copy(b[1:], head[:])
	copy(b[1+32:], tag)
	*head = sha256.Sum256(b[:])
}

// chainSeal folds a seal line into the head.
func chainSeal(head *[32]byte, line []byte) {
	h := sha256.New()
	h.Write([]byte{'s'})
	h.Write(head[:])
	h.Write(line)
	h.Sum(head[:0])
}

// sealMAC computes the MAC of a seal line's prefix under epoch key k.
func sealMAC(k *Key, prefix []byte) [32]byte {
	mk := macKey(k)
	defer clear(mk[:])
	m := hmac.New(sha256.New, mk[:])
	m.Write(prefix)
	var out [32]byte
	m.Sum(out[:0])
	return out
}

// ErrState marks a problem with the state file.
var ErrState = errors.New("seal state")
