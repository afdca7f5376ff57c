# bot-bottle's sidecar image: the egress proxy and the git gate
# (`bottle sidecar …`), with CA certificates, git and an SSH client, running as
# the non-root user `sidecar`. `bottle` comes with the loader and libraries it
# was built with and runs through its launcher, `/opt/bot-bottle/run`: the
# image's own glibc is never used for it.
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
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates git openssh-client; \
    rm -rf /var/lib/apt/lists/*; \
    update-ca-certificates; \
    useradd --create-home --shell /usr/sbin/nologin --uid 1500 sidecar; \
    install -d -o sidecar -g sidecar -m 0700 /etc/bot-bottle /var/lib/bot-bottle /run/bot-bottle
COPY bot-bottle/ /opt/bot-bottle/
USER sidecar
WORKDIR /var/lib/bot-bottle
