# doorman: a static binary in an empty image, running as an unprivileged user.
#
#   docker build -t doorman .
#   docker build --build-arg GO_IMAGE=doorman-local/golang:1.26.8-bookworm -t doorman .
#
# GO_IMAGE is the builder: any image with a Go toolchain matching go.mod
# (test/compose/images.sh builds one without a registry).
ARG GO_IMAGE=golang:1.26.8-bookworm

FROM ${GO_IMAGE} AS base
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-trimpath
COPY go.mod go.sum ./
RUN go mod download

# The third-party packages the binary imports. Precompiling them in their own
# layer (below) keeps a rebuild after a source change to doorman's own code.
FROM base AS deps
COPY . .
RUN go list -deps -f '{{if and (not .Standard) .Module (not .Module.Main)}}{{.ImportPath}}{{end}}' . | sort > /deps.txt

FROM base AS build
COPY --from=deps /deps.txt /deps.txt
RUN [ ! -s /deps.txt ] || go build $(cat /deps.txt)
COPY . .
# The version `doorman version` prints.
ARG VERSION=dev
RUN go build -ldflags="-s -w -X main.version=${VERSION}" -o /out/doorman . && \
    mkdir -p /out/state /out/run

FROM scratch
COPY --from=build /out/doorman /doorman
# The state directory, owned by the runtime user; a new named volume mounted
# here inherits that ownership.
COPY --from=build --chown=65532:65532 /out/state /var/lib/doorman
# The learning socket's directory (DOORMAN_LEARN_ADDR, docs/learn.md), owned
# the same way, for a volume shared with the proxy.
COPY --from=build --chown=65532:65532 /out/run /run/doorman
# Inside a container the listeners must accept other containers. An API on a
# non-loopback address needs DOORMAN_API_TOKEN: without one doorman refuses
# to start.
ENV DOORMAN_DECIDE_ADDR=0.0.0.0:9180 \
    DOORMAN_API_ADDR=0.0.0.0:9181 \
    DOORMAN_STATE_FILE=/var/lib/doorman/doorman.db
USER 65532:65532
EXPOSE 9180 9181
VOLUME /var/lib/doorman
ENTRYPOINT ["/doorman"]
CMD ["serve"]
