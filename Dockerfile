# Multi-stage: a static dirpv binary on a distroless nonroot base. The same content and user are
# built without Docker by hack/images.sh for the local cluster. For several platforms (make
# docker-image: buildx --platform), the builder runs on the build machine's platform and
# cross-compiles for each target; the distroless base is published for all of them.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd ./cmd
COPY provisioner ./provisioner
ARG VERSION=dev
ARG COMMIT=unknown
ARG TARGETOS TARGETARCH TARGETVARIANT
# GOARM is the number of the arm variant (v7 -> 7); empty elsewhere, Go's default.
RUN GOOS=$TARGETOS GOARCH=$TARGETARCH GOARM=${TARGETVARIANT#v} CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" -o /dirpv ./cmd/dirpv

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /dirpv /dirpv
USER 65532:65532
ENTRYPOINT ["/dirpv"]
