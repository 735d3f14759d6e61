#!/bin/sh
# access_test.sh - the gateway's access control on a real fleet (router, one worker on
# stories260K, the HTTPS gateway), driven with curl:
#   - every role (admin, user, trainer, auditor, service) against every endpoint of the
#     built-in policy: the endpoints that exist answer (200/201/404 for an unknown key)
#     to roles that hold their permission and 403 to the others; endpoints reserved for
#     later issues (files, fine-tuning jobs, audit, batches) answer 403 or, when allowed,
#     404 "not served yet";
#   - keys made by `citadel keys create` work at once (no restart) with their attributes:
#     a model list (403 for another model, /v1/models filtered), several roles;
#   - expired keys and keys revoked by `citadel keys revoke` or DELETE /admin/keys/{id}
#     are refused with 401 and a message saying why; keys are never in the gateway log;
#   - JWT bearer tokens (HS256 made with Python's hmac, RS256 signed by `openssl dgst`):
#     the roles claim gives the permissions; expired, wrong-audience, wrong-issuer and
#     alg "none" tokens are 401, a token with only roles the policy lacks is 403.
# Usage: tests/integration/access_test.sh [BUILD_DIR]   (run from the repository root)
set -u
BUILD=${1:-${BUILD:-build}}
BIN=$BUILD/bin
MODEL=tests/data/models/stories260K.gguf
NAME=stories260K

for f in "$BIN/citadel" "$BIN/citadel-router" "$BIN/citadel-worker" "$BIN/citadel-gateway" "$BIN/citadel-sanitizer"; do
    if [ ! -x "$f" ]; then echo "access_test: $f missing (run make)"; echo "0 passed, 1 failed"; exit 1; fi
done

. "$(dirname "$0")/lib.sh"
fleet_begin 2917
GPORT=$((BASE + 5))
URL=https://127.0.0.1:$GPORT
export CITADEL_HOME=$TMP/home
JWT_SECRET=test-secret-of-at-least-32-bytes-0123456789
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/rs.key" 2>/dev/null
openssl pkey -in "$TMP/rs.key" -pubout -out "$TMP/rs.pub" 2>/dev/null

CITADEL_ROUTER_FRONTEND=$FE CITADEL_ROUTER_BACKEND=$BE CITADEL_ROUTER_ADMIN_PORT=$((BASE + 2)) \
    "$BIN/citadel-router" >"$TMP/router.log" 2>&1 &
PIDS="$PIDS $!"
CITADEL_WORKER_ID=access-w0 CITADEL_WORKER_MODEL=$MODEL CITADEL_WORKER_ROUTER=$BE CITADEL_WORKER_THREADS=1 \
    CITADEL_WORKER_ADMIN_PORT=$((BASE + 3)) "$BIN/citadel-worker" >"$TMP/worker.log" 2>&1 &
PIDS="$PIDS $!"
start_sanitizer
CITADEL_GATEWAY_LISTEN=127.0.0.1 CITADEL_GATEWAY_SANITIZER=$SAN CITADEL_GATEWAY_PORT=$GPORT CITADEL_GATEWAY_ADMIN_PORT=$((BASE + 6)) \
    CITADEL_ROUTER_ENDPOINT=$FE CITADEL_GATEWAY_JWT_HS256_SECRET=$JWT_SECRET \
    CITADEL_GATEWAY_JWT_RS256_PUBLIC_KEY=$TMP/rs.pub CITADEL_GATEWAY_JWT_ISSUER=https://idp.test \
    CITADEL_GATEWAY_JWT_AUDIENCE=citadel "$BIN/citadel-gateway" >"$TMP/gateway.log" 2>&1 &
PIDS="$PIDS $!"

json() { python3 -c 'import json,sys; d=json.load(sys.stdin); v=eval(sys.argv[1]); sys.stdout.write(v if isinstance(v,str) else json.dumps(v))' "$1" 2>/dev/null; }
# req KEY METHOD PATH [BODY]: the HTTP status; the body in $TMP/body.
req() {
    k=$1; m=$2; p=$3; shift 3
    if [ $# -gt 0 ]; then
        curl -sk --max-time 60 -o "$TMP/body" -w '%{http_code}' -X "$m" -H "Authorization: Bearer $k" \
            -H 'Content-Type: application/json' --data-binary "$1" "$URL$p"
    else
        curl -sk --max-time 60 -o "$TMP/body" -w '%{http_code}' -X "$m" -H "Authorization: Bearer $k" "$URL$p"
    fi
}
newkey() { "$BIN/citadel" keys create "$@" | tail -n 1; }

i=0; MODELS=""
while [ $i -lt 150 ]; do
    if [ -s "$CITADEL_HOME/keys/admin.key" ]; then
        ADMIN=$(cat "$CITADEL_HOME/keys/admin.key")
        MODELS=$(curl -sk --max-time 2 -H "Authorization: Bearer $ADMIN" "$URL/v1/models" | json '",".join(m["id"] for m in d["data"])')
        [ "$MODELS" = "$NAME" ] && break
    fi
    sleep 0.1; i=$((i + 1))
done
if [ "$MODELS" != "$NAME" ]; then fail "fleet up: models '$MODELS'"; tail -n 20 "$TMP"/*.log; echo "$passed passed, $failed failed"; exit 1; fi

# One key per role, made by the CLI while the gateway runs (it reloads keys.db).
KEY_admin=$ADMIN
for r in user trainer auditor service; do
    eval "KEY_$r=\$(newkey --role $r --id test-$r)"
done
CHAT='{"model":"'$NAME'","messages":[{"role":"user","content":"Hi"}],"max_tokens":2}'
COMPL='{"model":"'$NAME'","prompt":"Once","max_tokens":2}'

# The matrix: endpoint, method, path, body, then the status each role must get.
#                    admin user trainer auditor service
MATRIX="chat         POST   /v1/chat/completions   CHAT   200 200 403 403 403
completions          POST   /v1/completions        COMPL  200 200 403 403 403
models               GET    /v1/models             -      200 200 200 403 200
keys_list            GET    /admin/keys            -      200 403 403 403 403
keys_create          POST   /admin/keys            NEWKEY 201 403 403 403 403
keys_revoke          DELETE /admin/keys/key-none   -      404 403 403 403 403
files                GET    /v1/files              -      404 403 404 403 403
fine_tuning          POST   /v1/fine_tuning/jobs   EMPTY  404 403 404 403 403
audit                GET    /v1/audit/events       -      404 403 403 404 403
batch                POST   /v1/batches            EMPTY  404 403 403 403 404"
bad=0; cells=0
echo "$MATRIX" | {
    while read -r name method path body a u t au s; do
        set -- "$a" "$u" "$t" "$au" "$s"
        for r in admin user trainer auditor service; do
            want=$1; shift
            eval "k=\$KEY_$r"
            case $body in
                CHAT) st=$(req "$k" "$method" "$path" "$CHAT") ;;
                COMPL) st=$(req "$k" "$method" "$path" "$COMPL") ;;
                NEWKEY) st=$(req "$k" "$method" "$path" '{"roles":["user"]}') ;;
                EMPTY) st=$(req "$k" "$method" "$path" '{}') ;;
                *) st=$(req "$k" "$method" "$path") ;;
            esac
            cells=$((cells + 1))
            if [ "$st" != "$want" ]; then
                echo "  matrix: $r $method $path -> $st, want $want: $(head -c 200 "$TMP/body")"
                bad=$((bad + 1))
            elif [ "$st" = 403 ] && [ "$(json 'd["error"]["code"]' <"$TMP/body")" != permission_denied ]; then
                echo "  matrix: $r $method $path 403 without code permission_denied"; bad=$((bad + 1))
            fi
        done
    done
    echo "$bad $cells" >"$TMP/matrix"
}
read -r bad cells <"$TMP/matrix"
if [ "$bad" = 0 ] && [ "$cells" = 50 ]; then ok "role x endpoint matrix: $cells cells as the policy says"
else fail "role x endpoint matrix: $bad of $cells cells wrong"; fi

# No key, a wrong key: 401 before any permission is looked at.
ST=$(curl -sk -o "$TMP/body" -w '%{http_code}' "$URL/admin/keys")
ST2=$(req ck-0000 GET /admin/keys)
if [ "$ST" = 401 ] && [ "$ST2" = 401 ]; then ok "401 without a key and with a wrong key on /admin/keys"; else fail "no key $ST, wrong key $ST2"; fi

# A key limited to one model: another model is 403, /v1/models lists only its own.
K=$(newkey --role user --models other-model --user carol)
ST=$(req "$K" POST /v1/chat/completions "$CHAT")
CODE=$(json 'd["error"]["code"]' <"$TMP/body")
ST2=$(req "$K" GET /v1/models)
N=$(json 'str(len(d["data"]))' <"$TMP/body")
if [ "$ST" = 403 ] && [ "$CODE" = model_not_allowed ] && [ "$ST2" = 200 ] && [ "$N" = 0 ]; then
    ok "a key for other-model: 403 model_not_allowed for $NAME, /v1/models lists none"
else fail "model list: $ST $CODE, models $ST2 n=$N"; fi
K=$(newkey --role auditor,user --models "$NAME")
ST=$(req "$K" POST /v1/chat/completions "$CHAT"); ST2=$(req "$K" GET /v1/audit/events); ST3=$(req "$K" GET /admin/keys)
if [ "$ST" = 200 ] && [ "$ST2" = 404 ] && [ "$ST3" = 403 ]; then ok "a key with roles auditor,user gets both roles' permissions and no more"
else fail "two roles: chat $ST audit $ST2 keys $ST3"; fi

# Expiry: a key that expires in 3 s (2 to 3 s, whole seconds) works, then is refused.
K=$(newkey --role user --expires 3s)
ST=$(req "$K" GET /v1/models)
sleep 3.2
ST2=$(req "$K" GET /v1/models)
MSG=$(json 'd["error"]["message"]' <"$TMP/body")
if [ "$ST" = 200 ] && [ "$ST2" = 401 ] && [ "$MSG" = "API key expired" ]; then ok "an expired key is refused: 401 '$MSG'"
else fail "expiry: $ST then $ST2 '$MSG'"; fi

# Revocation by the CLI and by the REST API.
K=$(newkey --role user --id doomed-cli)
ST=$(req "$K" GET /v1/models)
"$BIN/citadel" keys revoke doomed-cli >/dev/null
ST2=$(req "$K" GET /v1/models)
MSG=$(json 'd["error"]["message"]' <"$TMP/body")
if [ "$ST" = 200 ] && [ "$ST2" = 401 ] && [ "$MSG" = "API key revoked" ]; then ok "citadel keys revoke: the key is refused at once (401 '$MSG')"
else fail "CLI revoke: $ST then $ST2 '$MSG'"; fi
ST=$(req "$ADMIN" POST /admin/keys '{"roles":["user"],"models":["'$NAME'"],"rpm":100,"expires_in":"1h","user":"dave"}')
K=$(json 'd["key"]' <"$TMP/body"); ID=$(json 'd["id"]' <"$TMP/body")
ST2=$(req "$K" POST /v1/completions "$COMPL")
ST3=$(req "$ADMIN" DELETE "/admin/keys/$ID")
STATE=$(json 'd["status"]' <"$TMP/body")
ST4=$(req "$K" POST /v1/completions "$COMPL")
if [ "$ST" = 201 ] && [ "$ST2" = 200 ] && [ "$ST3" = 200 ] && [ "$STATE" = revoked ] && [ "$ST4" = 401 ]; then
    ok "POST /admin/keys makes a working key; DELETE /admin/keys/$ID revokes it (401 after)"
else fail "REST create/revoke: $ST $ST2 $ST3 $STATE $ST4"; fi
LISTED=$("$BIN/citadel" keys list | awk -v id="$ID" '$1 == id { print $2 }')
if [ "$LISTED" = revoked ]; then ok "citadel keys list shows the REST-revoked key as revoked"; else fail "keys list: '$LISTED'"; fi

# JWTs. mkjwt ALG ROLES [EXP_OFFSET_S] [AUD] [ISS]: a token; RS256 is signed by openssl.
mkjwt() {
    JWT_SECRET=$JWT_SECRET RSKEY=$TMP/rs.key python3 - "$@" <<'PY'
import base64, hashlib, hmac, json, os, subprocess, sys, time
alg, roles, off, aud, iss = (sys.argv[1:] + [None] * 5)[:5]
secret, rskey = os.environ["JWT_SECRET"], os.environ["RSKEY"]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
claims = {"iss": iss or "https://idp.test", "aud": aud or "citadel", "sub": "jwt-alice",
          "roles": roles.split(","), "exp": int(time.time()) + int(off or 600)}
head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
if alg == "HS256":
    sig = hmac.new(secret.encode(), head.encode(), hashlib.sha256).digest()
elif alg == "RS256":
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", rskey], input=head.encode(), capture_output=True).stdout
else:
    sig = b""
print(head + "." + b64(sig))
PY
}
T=$(mkjwt HS256 user)
ST=$(req "$T" POST /v1/chat/completions "$CHAT"); ST2=$(req "$T" GET /admin/keys)
if [ "$ST" = 200 ] && [ "$ST2" = 403 ]; then ok "HS256 JWT with roles [user]: chat 200, /admin/keys 403"
else fail "HS256 JWT: chat $ST, keys $ST2 $(cat "$TMP/body")"; fi
T=$(mkjwt RS256 auditor)
ST=$(req "$T" GET /v1/audit/events); ST2=$(req "$T" POST /v1/chat/completions "$CHAT")
if [ "$ST" = 404 ] && [ "$ST2" = 403 ]; then ok "RS256 JWT with roles [auditor]: audit allowed (404 not served yet), chat 403"
else fail "RS256 JWT: audit $ST, chat $ST2 $(cat "$TMP/body")"; fi
bad=""
for spec in "HS256 user -100" "HS256 user 600 other-aud" "HS256 user 600 citadel https://evil.test" "none admin"; do
    # shellcheck disable=SC2086
    T=$(mkjwt $spec)
    ST=$(req "$T" GET /v1/models)
    [ "$ST" = 401 ] || bad="$bad [$spec]=$ST"
done
if [ -z "$bad" ] && grep -q 'JWT refused: token expired' "$TMP/gateway.log" && grep -q 'JWT refused: wrong audience' "$TMP/gateway.log"; then
    ok "expired, wrong-audience, wrong-issuer and alg none JWTs: 401"
else fail "bad JWTs accepted:$bad"; fi
T=$(mkjwt RS256 nobody)
ST=$(req "$T" GET /v1/models)
if [ "$ST" = 403 ]; then ok "a valid JWT whose roles the policy does not define: 403"; else fail "JWT with unknown role: $ST"; fi

# Secrets never reach the log: no key, not even its random part, in the gateway's log.
LEAK=0
for k in "$KEY_admin" "$KEY_user" "$KEY_trainer" "$K" "$JWT_SECRET"; do
    grep -q "${k#ck-}" "$TMP/gateway.log" && LEAK=1
done
if [ $LEAK = 0 ] && grep -q 'key_id=test-user' "$TMP/gateway.log"; then ok "the gateway log names key ids, never keys nor the JWT secret"
else fail "a key is in the gateway log (or no key_id logged)"; fi

[ $failed -eq 0 ] || { echo "--- logs"; tail -n 20 "$TMP"/*.log; }
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
