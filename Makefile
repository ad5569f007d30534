# ClaudeFS — build, test, benchmark and demo entry points.
# `make demo` and `make test` work on a fresh Debian machine as root: the
# tools they need (fio, promtool, chromium, perf, staticcheck) are installed here, not by hand.

GO       ?= go
BIN      := bin
DEMO_DIR ?= demo
PKGS     := ./...
# The crash test and the fuzz seed corpus run as part of `make test`.
TEST_TIMEOUT ?= 15m

.PHONY: all build test fuzz bench lint demo demo-down tools clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/cfs ./cmd/cfs
	$(GO) build -o $(BIN)/cfsctl ./cmd/cfsctl

# tools installs what the tests and benchmarks need (Debian packages).
tools:
	@command -v fio >/dev/null || { \
	  echo "installing fio (benchmark baseline)"; \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio >/dev/null; }
	@command -v fusermount3 >/dev/null || { \
	  echo "installing fuse3 (fusermount3: cfs umount, unprivileged mounts)"; \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 >/dev/null; }
	@command -v promtool >/dev/null || { \
	  echo "installing prometheus (promtool checks tools/prometheus/alerts.yml)"; \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }
	@command -v chromium >/dev/null || { \
	  echo "installing chromium (the flame graph test opens its SVG headless)"; \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@command -v perf >/dev/null || { \
	  echo "installing linux-perf (cfsctl perf-profile)"; \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null || true; }

test: tools
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)
	$(GO) test -count=1 -race -timeout $(TEST_TIMEOUT) ./nvme/... ./netio/... ./dataplane/... ./client/data/...
	$(GO) test -count=1 -race -short -timeout $(TEST_TIMEOUT) ./controlplane/... ./client/metaclient/...
	CFS_IOENGINE=pread $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./nvme/chunkstore/

# fuzz runs each fuzz target for FUZZTIME (the seed corpora already run in `make test`).
FUZZTIME ?= 60s
fuzz:
	$(GO) test -run XXX -fuzz FuzzOpenCorrupted -fuzztime $(FUZZTIME) ./nvme/chunkstore/
	$(GO) test -run XXX -fuzz FuzzDecodeSummary -fuzztime $(FUZZTIME) ./nvme/chunkstore/
	$(GO) test -run XXX -fuzz FuzzSuperblock -fuzztime $(FUZZTIME) ./nvme/chunkstore/
	$(GO) test -run XXX -fuzz FuzzParseSize -fuzztime $(FUZZTIME) ./bench/
	$(GO) test -run XXX -fuzz FuzzParseJobFile -fuzztime $(FUZZTIME) ./bench/
	$(GO) test -run XXX -fuzz FuzzParseReport -fuzztime $(FUZZTIME) ./bench/
	$(GO) test -run XXX -fuzz FuzzDecodeFrame -fuzztime $(FUZZTIME) ./netio/
	$(GO) test -run XXX -fuzz FuzzDecodeRequest -fuzztime $(FUZZTIME) ./dataplane/
	$(GO) test -run XXX -fuzz FuzzServerStream -fuzztime $(FUZZTIME) ./dataplane/sidecar/
	$(GO) test -run XXX -fuzz FuzzClientResponse -fuzztime $(FUZZTIME) ./dataplane/sidecar/
	$(GO) test -run XXX -fuzz FuzzProfileReply -fuzztime $(FUZZTIME) ./dataplane/sidecar/
	$(GO) test -run XXX -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./profiling/analyze/
	$(GO) test -run XXX -fuzz FuzzParsePerfScript -fuzztime $(FUZZTIME) ./profiling/analyze/
	$(GO) test -run XXX -fuzz FuzzSet -fuzztime $(FUZZTIME) ./dataplane/dpconfig/
	$(GO) test -run XXX -fuzz FuzzLoad -fuzztime $(FUZZTIME) ./dataplane/dpconfig/
	$(GO) test -run XXX -fuzz FuzzDecodeFrame -fuzztime $(FUZZTIME) ./controlplane/raftmux/
	$(GO) test -run XXX -fuzz FuzzDecodeRPC -fuzztime $(FUZZTIME) ./controlplane/raftmux/
	$(GO) test -run XXX -fuzz FuzzDecodeCommand -fuzztime $(FUZZTIME) ./controlplane/kvsm/
	$(GO) test -run XXX -fuzz FuzzDecodeResult -fuzztime $(FUZZTIME) ./controlplane/kvsm/
	$(GO) test -run XXX -fuzz FuzzDecodeAnswers -fuzztime $(FUZZTIME) ./controlplane/kvsm/
	$(GO) test -run XXX -fuzz FuzzApplyAndQuery -fuzztime $(FUZZTIME) ./controlplane/kvsm/
	$(GO) test -run XXX -fuzz FuzzSnapshotStream -fuzztime $(FUZZTIME) ./controlplane/kvsm/
	$(GO) test -run XXX -fuzz FuzzParseAlertHistory -fuzztime $(FUZZTIME) ./controlplane/node/
	$(GO) test -run XXX -fuzz FuzzParseSince -fuzztime $(FUZZTIME) ./controlplane/node/
	$(GO) test -run XXX -fuzz FuzzDecodeCommand -fuzztime $(FUZZTIME) ./controlplane/meta/
	$(GO) test -run XXX -fuzz FuzzDecodeAnswers -fuzztime $(FUZZTIME) ./controlplane/meta/
	$(GO) test -run XXX -fuzz FuzzApply -fuzztime $(FUZZTIME) ./controlplane/meta/
	$(GO) test -run XXX -fuzz FuzzSplitJoinToken -fuzztime $(FUZZTIME) ./controlplane/node/
	$(GO) test -run XXX -fuzz FuzzParseCSR -fuzztime $(FUZZTIME) ./controlplane/pki/
	$(GO) test -run XXX -fuzz FuzzParsePEM -fuzztime $(FUZZTIME) ./controlplane/pki/
	$(GO) test -run XXX -fuzz FuzzDecodeShard -fuzztime $(FUZZTIME) ./client/data/

# bench: side-by-side figures against fio on the same file (docs/benchmarks.md).
bench: build tools
	./tools/bench-engine.sh

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet $(PKGS)
	@command -v staticcheck >/dev/null || $(GO) install honnef.co/go/tools/cmd/staticcheck@latest
	$$($(GO) env GOPATH)/bin/staticcheck $(PKGS)

# demo: a 3-node cluster on loopback with file-backed devices under ./demo
# (256 metadata shards), a short benchmark of one node's dataplane and of
# replicated commits, the cluster's status, then the file system mounted at
# ./mnt (cfs mount). Both stay up: `make demo-down`.
demo: build tools
	@mkdir -p $(DEMO_DIR)
	./$(BIN)/cfs dev up --dir $(DEMO_DIR)/cluster --nodes 3 --shards 256 --device-size 1G
	eval "$$(./$(BIN)/cfs dev env --dir $(DEMO_DIR)/cluster)" && \
	  ./$(BIN)/cfs bench run --target dataplane:$${CFS_DATAPLANES%%,*} --rw=randread --bs=4k --iodepth=32 --size=256M --runtime=5 --time_based
	./$(BIN)/cfs bench kv --dir $(DEMO_DIR)/cluster --clients 16 --runtime 5s
	./$(BIN)/cfs bench run --profile metadata --numjobs 4 --dirs 8 --files 250 \
	  --target cluster:$$(./$(BIN)/cfs dev status --json --dir $(DEMO_DIR)/cluster | python3 -c 'import json,sys; print(",".join(n["control"]["raft_addr"] for n in json.load(sys.stdin)["nodes"]))')
	./$(BIN)/cfs dev status --dir $(DEMO_DIR)/cluster
	@mkdir -p mnt
	@mountpoint -q mnt || { eval "$$(./$(BIN)/cfs dev env --dir $(DEMO_DIR)/cluster)" && \
	  nohup ./$(BIN)/cfs mount mnt >$(DEMO_DIR)/mount.log 2>&1 & \
	  for i in $$(seq 30); do mountpoint -q mnt && break; sleep 1; done; \
	  mountpoint -q mnt || { echo "cfs mount failed:"; tail -5 $(DEMO_DIR)/mount.log; exit 1; }; }
	@echo "the file system is mounted at ./mnt (log: $(DEMO_DIR)/mount.log)"
	@echo "the cluster and the mount keep running; stop both with: make demo-down"

demo-down:
	-mountpoint -q mnt && ./$(BIN)/cfs umount mnt
	./$(BIN)/cfs dev down --dir $(DEMO_DIR)/cluster

clean:
	-mountpoint -q mnt && ./$(BIN)/cfs umount mnt
	-./$(BIN)/cfs dev down --dir $(DEMO_DIR)/cluster 2>/dev/null
	rm -rf $(BIN) $(DEMO_DIR)
