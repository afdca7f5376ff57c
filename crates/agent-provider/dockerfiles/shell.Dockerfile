# bot-bottle's bundled image for the `shell` agent: Debian with bash, git,
# curl, iproute2, tmux (the agent's session) and CA certificates, and a
# non-root user `agent`.
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
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends bash ca-certificates curl git iproute2 tmux; \
    rm -rf /var/lib/apt/lists/*; \
    update-ca-certificates; \
    useradd --create-home --shell /bin/bash --uid 1000 agent
USER agent
WORKDIR /home/agent
