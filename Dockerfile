# syntax=docker/dockerfile:1
# mailgate container image: a static binary on distroless, running as nonroot.
#   docker build --build-arg VERSION=$(git describe --tags --always) -t mailgate .
#   docker run -d --name mailgate \
#     -v /srv/mailgate/etc:/etc/mailgate:ro -v mailgate-state:/var/lib/mailgate \
#     -p 993:993 -p 143:143 mailgate
# /etc/mailgate must hold mailgate.yaml (plus the certificates and admin token it names);
# set state: /var/lib/mailgate/state.db, and admin.listen: 0.0.0.0:1880 to reach the API
# from outside the container. scripts/package.sh docker builds this when a daemon runs.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=linux go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.version=${VERSION}" -o /out/usr/bin/mailgate ./cmd/mailgate \
 && mkdir -p /out/etc/mailgate /out/var/lib/mailgate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/usr/bin/mailgate /usr/bin/mailgate
# Owned by nonroot (65532) so that a fresh named volume is writable by mailgate.
COPY --from=build --chown=65532:65532 /out/var/lib/mailgate /var/lib/mailgate
COPY --from=build /out/etc/mailgate /etc/mailgate
USER 65532:65532
VOLUME ["/etc/mailgate", "/var/lib/mailgate"]
# SMTP 25/465/587, POP3 110/995, IMAP 143/993, HTTPS 443 (+ HTTP/3 on UDP), XMPP 5222/5223,
# admin API 1880. Docker lets unprivileged processes bind ports < 1024 in the container
# (net.ipv4.ip_unprivileged_port_start=0), so no capability is needed.
EXPOSE 25 110 143 443 443/udp 465 587 993 995 1880 5222 5223
ENTRYPOINT ["/usr/bin/mailgate"]
CMD ["serve", "-config", "/etc/mailgate/mailgate.yaml"]
