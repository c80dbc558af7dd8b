// Package crypto owns the encryption keyring and the AES-256-GCM sealing of
// every stored secret, with associated data that binds each ciphertext to its
// row and column. It does no I/O.
package crypto
