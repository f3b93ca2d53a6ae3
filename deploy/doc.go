// Package deploy holds no code: its tests check the shipped deployment
// artefacts as they are shipped. The systemd unit is verified with
// systemd-analyze, `make install` is run into a temporary DESTDIR, the
// logrotate snippet is run by the real logrotate against a running agent,
// the Kubernetes manifest is checked by the validator module in
// kubernetes/validate, and the Containerfile's build line is run to check
// that it produces a static binary.
package deploy
