# Multi-stage: a static dirpv binary on a distroless nonroot base. The same content and user are
# built without Docker by hack/images.sh for the local cluster.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd ./cmd
COPY provisioner ./provisioner
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" -o /dirpv ./cmd/dirpv

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /dirpv /dirpv
USER 65532:65532
ENTRYPOINT ["/dirpv"]
