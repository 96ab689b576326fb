# The two commands of a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
APT_RUN  := cmake
APT_TEST := cmake nginx-light wrk slapd ldap-utils postgresql prometheus

.PHONY: run test deps-run deps-test build check

# Installs what is missing (cmake for zlib-ng), then runs the gateway on the shipped conf/.
run: deps-run
	cargo run --release -- --conf conf --data data --certs certs

# Installs test prerequisites (apt packages, the OAuth2 and SMTP servers from npm), then runs every test.
test: deps-test
	cargo test

deps-run:
	@bash .ci/apt-ensure $(APT_RUN)

deps-test:
	@bash .ci/apt-ensure $(APT_TEST)
	@if [ ! -d tests/oauth/node_modules/oidc-provider ]; then npm ci --prefix tests/oauth --no-audit --no-fund; fi
	@if [ ! -d tests/smtp/node_modules/smtp-server ]; then npm ci --prefix tests/smtp --no-audit --no-fund; fi

check:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
