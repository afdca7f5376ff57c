# bot-bottle's bundled image for the `codex` agent: Node.js from Debian with
# Codex CLI installed, running as the non-root user `node` (home /home/node).
FROM debian:bookworm-slim
# The host's CA bundle when the build trusts it (TLS-inspecting proxies); empty otherwise.
COPY bot-bottle-host-ca.pem /tmp/bot-bottle-host-ca.pem
RUN set -eux; \
    if [ -s /tmp/bot-bottle-host-ca.pem ]; then \
        mkdir -p /usr/local/share/ca-certificates; \
        cp /tmp/bot-bottle-host-ca.pem /usr/local/share/ca-certificates/bot-bottle-host-ca.crt; \
    fi; \
    rm -f /tmp/bot-bottle-host-ca.pem; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        bash ca-certificates curl git iproute2 less nodejs npm procps ripgrep tmux; \
    rm -rf /var/lib/apt/lists/*; \
    update-ca-certificates; \
    useradd --create-home --shell /bin/bash --uid 1000 node
RUN set -eux; \
    if [ -s /usr/local/share/ca-certificates/bot-bottle-host-ca.crt ]; then \
        export NODE_EXTRA_CA_CERTS=/usr/local/share/ca-certificates/bot-bottle-host-ca.crt; \
    fi; \
    npm install -g --no-fund --no-audit --loglevel=error @openai/codex; \
    npm cache clean --force; \
    codex --version
USER node
WORKDIR /home/node
