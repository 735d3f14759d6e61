# Makefile - the one entry point of Citadel's build.
#
#   make            build the engine library and every binary into build/ (bin/ holds binaries)
#   make test       build and run every test (tests/unit/test_*.c, one CMocka binary each)
#   make SAN=1 ...  the same with AddressSanitizer and UBSan, into build/san/
#   make deps       install the Debian packages the project needs
#   make model      put the default model (SmolLM2-135M-Instruct) in var/models/
#   make bench      benchmarks: engine, matmul, fleet end to end (tests/bench/run_bench.sh)
#   make fuzz       build the libFuzzer harnesses (clang) into build/fuzz/
#   make run        build, fetch the model, start the local fleet (citadel up --detach)
#
# Sources are found by convention so that adding a module needs no edit here:
#   kernels/**/*.c          -> build/libcitadel_kernels.a
#   kernels/**/*_avx2.c     compiled with AVX2+FMA+F16C, used only when the CPU has them
#   kernels/**/*_avx512.c   compiled with AVX-512 (F, BW, VL, VNNI), same rule
#   services/cli/*.c        -> build/bin/citadel
#   services/NAME/*.c       -> build/bin/citadel-NAME (every other directory in services/)
#   proto/citadel.proto     -> build/gen/citadel.pb-c.{c,h} (protoc-c), compiled into
#                              build/libcitadel_common.a with common/*.c
#   tests/unit/test_X.c     -> build/tests/test_X, linked with the kernels library

CC      ?= cc
SAN     ?= 0
BUILD   := build
ifeq ($(SAN),1)
BUILD   := build/san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif

GEN         := $(BUILD)/gen
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -g -pthread -Ikernels -Icommon -I$(GEN) -MMD -MP
OPT         := -O2
# OpenBLAS (cblas_sgemm) for the training passes (kernels/train) and LoRA products.
BLAS_CFLAGS := $(shell pkg-config --cflags openblas 2>/dev/null)
BLAS_LIBS   := $(shell pkg-config --libs openblas 2>/dev/null || echo -lopenblas)
CFLAGS      := $(CFLAGS_BASE) $(OPT) $(SANFLAGS) $(BLAS_CFLAGS) $(EXTRA_CFLAGS)
KERNEL_OPT  := -O3
AVX2_FLAGS  := -mavx2 -mfma -mf16c
AVX512_FLAGS := $(AVX2_FLAGS) -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx512bf16
# What common/ needs (ZeroMQ, protobuf-c, libevent's evhttp with threads, OpenSSL): linked
# into every test and binary; static linking pulls in only what each one uses.
FLEET_LIBS  := $(shell pkg-config --libs libzmq libprotobuf-c libevent libevent_pthreads libssl libcrypto 2>/dev/null || echo -lzmq -lprotobuf-c -levent_pthreads -levent -lssl -lcrypto)
# PCRE2 (with JIT) for common/pii.c, the sanitizer's detectors shared by the service and the CLI.
PCRE2_LIBS  := $(shell pkg-config --libs libpcre2-8 2>/dev/null || echo -lpcre2-8)
# jansson for common/train_data.c (fine-tuning JSONL) and the audit queries; librdkafka
# (audit events, batch jobs, citadel-kafka-dev's in-memory cluster), hiredis (the
# router's response cache).
JANSSON_LIBS := $(shell pkg-config --libs jansson 2>/dev/null || echo -ljansson)
DATA_LIBS   := $(shell pkg-config --libs rdkafka hiredis 2>/dev/null || echo -lrdkafka -lhiredis)
LDLIBS      := $(FLEET_LIBS) $(PCRE2_LIBS) $(DATA_LIBS) $(BLAS_LIBS) $(JANSSON_LIBS) -lm -pthread $(SANFLAGS)

KERNEL_SRC  := $(shell find kernels -name '*.c' -not -path 'kernels/cuda/*' | sort)
KERNEL_OBJ  := $(KERNEL_SRC:%.c=$(BUILD)/obj/%.o)
KERNEL_LIB  := $(BUILD)/libcitadel_kernels.a

# CUDA backend (issue 8): kernels/cuda/*.cu -> $(BUILD)/libcitadel_cuda.a, only when nvcc
# is on PATH (CUDA=0 forces it off). Linked with the static CUDA runtime so every binary
# still starts and runs the CPU path on a machine with no GPU and no driver.
NVCC        ?= $(shell command -v nvcc 2>/dev/null)
CUDA        ?= $(if $(NVCC),1,0)
ifeq ($(CUDA),1)
CUDA_HOME   ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_OBJ    := $(patsubst %.cu,$(BUILD)/obj/%.o,$(wildcard kernels/cuda/*.cu))
CUDA_LIB    := $(BUILD)/libcitadel_cuda.a
NVCC_FLAGS  := -O3 -std=c++17 -Ikernels -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
LDLIBS      := $(CUDA_LIB) -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lstdc++ $(LDLIBS)
endif

PROTO_SRC   := $(wildcard proto/*.proto)
PROTO_C     := $(PROTO_SRC:proto/%.proto=$(GEN)/%.pb-c.c)
PROTO_H     := $(PROTO_C:.c=.h)
PROTO_OBJ   := $(PROTO_C:$(GEN)/%.c=$(BUILD)/obj/gen/%.o)

COMMON_SRC  := $(wildcard common/*.c)
COMMON_OBJ  := $(COMMON_SRC:%.c=$(BUILD)/obj/%.o) $(PROTO_OBJ)
COMMON_LIB  := $(BUILD)/libcitadel_common.a

CLI_SRC     := $(wildcard services/cli/*.c)
CLI_OBJ     := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
CLI_BIN     := $(BUILD)/bin/citadel

# Every directory in services/ with a main.c, but cli, is one service binary, citadel-<directory>.
SERVICES    := $(filter-out cli,$(patsubst services/%/main.c,%,$(wildcard services/*/main.c)))
SERVICE_BIN := $(SERVICES:%=$(BUILD)/bin/citadel-%)

TEST_SRC    := $(wildcard tests/unit/test_*.c)
TEST_BIN    := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)

# tests/integration/*_test.sh start real services on loopback; their helper programs
# (tests/integration/*.c) are built next to the unit tests.
INTEG_TESTS := $(wildcard tests/integration/*_test.sh)
INTEG_BIN   := $(patsubst tests/integration/%.c,$(BUILD)/tests/integration/%,$(wildcard tests/integration/*.c))

FUZZ_SRC    := $(wildcard tests/fuzz/fuzz_*.c)

BENCH_SRC   := $(wildcard tests/bench/bench_*.c)
BENCH_BIN   := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/bench/%)

MODEL_DIR   := var/models
MODEL       := $(MODEL_DIR)/SmolLM2-135M-Instruct.Q4_1.gguf

.PHONY: all test deps model bench fuzz run clean
all: $(KERNEL_LIB) $(CLI_BIN) $(SERVICE_BIN) $(TEST_BIN) $(BENCH_BIN)

# protoc-c writes both files at once (a pattern rule with two targets is one recipe);
# .SECONDARY (no list: every target) keeps make from deleting generated files and test objects as intermediates.
$(GEN)/%.pb-c.c $(GEN)/%.pb-c.h: proto/%.proto
	@mkdir -p $(GEN)
	protoc-c --proto_path=proto --c_out=$(GEN) $<
.SECONDARY:

$(BUILD)/obj/gen/%.o: $(GEN)/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/kernels/%_avx2.o: kernels/%_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(KERNEL_OPT) $(AVX2_FLAGS) -c $< -o $@

$(BUILD)/obj/kernels/%_avx512.o: kernels/%_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(KERNEL_OPT) $(AVX512_FLAGS) -c $< -o $@

$(BUILD)/obj/kernels/%.o: kernels/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(KERNEL_OPT) -c $< -o $@

# Order-only: anything outside kernels/ may include the generated header, which must exist
# before the first compile; after that the .d files track it like any other header.
$(BUILD)/obj/%.o: %.c | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(KERNEL_LIB): $(KERNEL_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

ifeq ($(CUDA),1)
$(BUILD)/obj/kernels/cuda/%.o: kernels/cuda/%.cu kernels/cuda/cuda_backend.h
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) -c $< -o $@

$(CUDA_LIB): $(CUDA_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/obj/services/cli/main.o: CFLAGS += -DCITADEL_CUDA
$(CLI_BIN) $(SERVICE_BIN) $(TEST_BIN) $(INTEG_BIN) $(BENCH_BIN): $(CUDA_LIB)
endif

$(COMMON_LIB): $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(CLI_BIN): $(CLI_OBJ) $(KERNEL_LIB) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(KERNEL_LIB) $(COMMON_LIB) $(LDLIBS)

# services/<name>/*.c -> citadel-<name>; SERVICE_LIBS_<name> adds a service's own libraries.
SERVICE_LIBS_gateway = $(GATEWAY_LIBS)
define service_rule
$(BUILD)/bin/citadel-$(1): $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard services/$(1)/*.c)) $(KERNEL_LIB) $(COMMON_LIB)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CFLAGS) -o $$@ $$(filter %.o,$$^) $(KERNEL_LIB) $(COMMON_LIB) $$(SERVICE_LIBS_$(1)) $$(LDLIBS)
endef
$(foreach s,$(SERVICES),$(eval $(call service_rule,$(s))))

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(KERNEL_LIB) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(KERNEL_LIB) $(COMMON_LIB) -lcmocka $(LDLIBS)

# tests/unit/test_<service>_*.c test a service's modules: they see services/<service>/
# and link the modules listed in <SERVICE>_TEST_MODULES (the ones without sockets;
# the rest is exercised by tests/integration).
SERVICE_TEST_LIBS ?=
ROUTER_TEST_MODULES := registry pending cache
WORKER_TEST_MODULES := job_queue request_map admission adapters
SANITIZER_TEST_MODULES := sanitizer_service
define service_test_rule
$(BUILD)/obj/tests/unit/test_$(1)_%.o: CFLAGS += -Iservices/$(1)
$(BUILD)/tests/test_$(1)_%: $(BUILD)/obj/tests/unit/test_$(1)_%.o $(patsubst %,$(BUILD)/obj/services/$(1)/%.o,$(2)) $(KERNEL_LIB) $(COMMON_LIB)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CFLAGS) -o $$@ $$(filter %.o,$$^) $(KERNEL_LIB) $(COMMON_LIB) -lcmocka $$(SERVICE_TEST_LIBS) $$(LDLIBS)
endef
$(eval $(call service_test_rule,router,$(ROUTER_TEST_MODULES)))
$(eval $(call service_test_rule,worker,$(WORKER_TEST_MODULES)))
$(eval $(call service_test_rule,sanitizer,$(SANITIZER_TEST_MODULES)))
# The gateway's modules need libevent (with OpenSSL), jansson, OpenSSL, hiredis, libjwt and gRPC core.
GATEWAY_LIBS := $(shell pkg-config --libs libevent_openssl libevent jansson openssl hiredis libjwt grpc 2>/dev/null || echo -levent_openssl -levent -ljansson -lssl -lcrypto -lhiredis -ljwt -lgrpc -lgpr)
# Gateway tests link the modules that need neither protobuf nor sockets (the ZeroMQ and
# HTTP modules are exercised by tests/integration).
GATEWAY_TEST_OBJ := $(patsubst %,$(BUILD)/obj/services/gateway/%.o,gw_tls gw_openai gw_log gw_policy gw_auth gw_jwt gw_admin_keys gw_ratelimit)
$(BUILD)/obj/tests/unit/test_gateway_%.o: CFLAGS += -Iservices/gateway
$(BUILD)/tests/test_gateway_%: $(BUILD)/obj/tests/unit/test_gateway_%.o $(GATEWAY_TEST_OBJ) $(KERNEL_LIB) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $(filter %.o,$^) $(KERNEL_LIB) $(COMMON_LIB) -lcmocka $(GATEWAY_LIBS) $(LDLIBS)

# grpc_client (grpc_test.sh's client of the gateway's gRPC service) is a gRPC core program.
$(BUILD)/tests/integration/grpc_client: LDLIBS += $(shell pkg-config --libs grpc 2>/dev/null || echo -lgrpc -lgpr)
$(BUILD)/tests/integration/%: $(BUILD)/obj/tests/integration/%.o $(KERNEL_LIB) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(KERNEL_LIB) $(COMMON_LIB) $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/obj/tests/bench/%.o $(KERNEL_LIB) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(KERNEL_LIB) $(COMMON_LIB) $(LDLIBS)

# Every test runs from the repository root so that tests/data/ and var/ resolve; a
# failing test fails the target but the others still run, so one report shows all.
test: all $(INTEG_BIN)
	@BUILD=$(BUILD) CITADEL_BIN=$(CLI_BIN) ./scripts/run_tests.sh $(TEST_BIN) $(INTEG_TESTS)

deps:
	@./scripts/install_deps.sh

model: $(MODEL)
$(MODEL):
	@./scripts/fetch_model.sh $(MODEL_DIR)

bench: $(CLI_BIN) $(BENCH_BIN)
	@./tests/bench/run_bench.sh $(BUILD)

# fuzz_sanitize also needs the sanitizer's modules from common/ and PCRE2.
FUZZ_SANITIZE := common/pii.c common/aho_corasick.c common/sanitize.c common/stream_filter.c common/json_writer.c
fuzz:
	@mkdir -p build/fuzz
	@for f in $(FUZZ_SRC); do \
	  n=$$(basename $$f .c); \
	  echo "clang $$f -> build/fuzz/$$n"; \
	  clang -std=c11 -D_GNU_SOURCE -g -O1 -Ikernels -fsanitize=fuzzer,address,undefined \
	    $$f $(wildcard kernels/gguf/*.c) $$([ $$n = fuzz_sanitize ] && echo "-Icommon $(FUZZ_SANITIZE) $(PCRE2_LIBS)") \
	    -lm -pthread -o build/fuzz/$$n || exit 1; \
	done

# The local fleet (router, workers, gateway) in the background; `citadel up` waits until
# every service is ready and prints the URL, the admin key's path and a curl example.
# Stop it with `build/bin/citadel down`.
run: all model
	@$(CLI_BIN) up --detach --model $(MODEL)

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
