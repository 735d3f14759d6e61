/* chat_template.c - recognising a model's chat template family and rendering chat
 * messages the way its official Jinja template would (see chat_template.h).
 *
 * The engine (engine_render_chat) detects the family once when a model is opened and
 * renders every chat request with it; the text is then tokenized with special tokens
 * parsed. Each family is one small render function that follows its reference template
 * line by line; the templates themselves are quoted in shortened form above each one so
 * that a reader can compare. This is deliberately not a Jinja interpreter: tools,
 * multimodal content and exotic templates fall back to ChatML (known = false).
 */
#include "tokenizer/chat_template.h"

#include <stdlib.h>
#include <string.h>

/* ---- a growing string ----------------------------------------------------------------- */

typedef struct strbuf {
    char *p;
    size_t len, cap;
    bool oom;  /* an append failed: the result is dropped at the end */
} strbuf;

static void sb_addn(strbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_add(strbuf *b, const char *s) { sb_addn(b, s, strlen(s)); }

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

/* Appends s without its leading and trailing whitespace (Jinja's `trim`, Python's
 * `strip()` on ASCII whitespace). */
static void sb_add_trimmed(strbuf *b, const char *s)
{
    size_t n = strlen(s);
    while (n > 0 && is_space(s[n - 1]))
        n--;
    while (n > 0 && is_space(*s)) {
        s++;
        n--;
    }
    sb_addn(b, s, n);
}

/* Hands the buffer over: the string, or NULL (and nothing leaked) after a failure. An
 * empty rendering is still a valid empty string. */
static char *sb_finish(strbuf *b)
{
    if (!b->oom && b->p == NULL)
        sb_addn(b, "", 0);
    if (b->oom) {
        free(b->p);
        return NULL;
    }
    return b->p;
}

static bool is_role(const chat_message *m, const char *role) { return strcmp(m->role, role) == 0; }

/* ---- detection ------------------------------------------------------------------------ */

/* Marker strings, most specific first: a template is matched by the first family whose
 * marker it contains. Llama 2 and Mistral share "[INST]"; only Llama 2 has "<<SYS>>". */
enum chat_family chat_template_detect(const char *jinja, bool *known)
{
    static const struct {
        const char *marker, *also;
        enum chat_family family;
    } rules[] = {
        {"<|im_start|>", NULL, CHAT_CHATML},
        {"<|start_header_id|>", NULL, CHAT_LLAMA3},
        {"<start_of_turn>", NULL, CHAT_GEMMA},
        {"<|user|>", NULL, CHAT_ZEPHYR},
        {"[INST]", "<<SYS>>", CHAT_LLAMA2},
        {"[INST]", NULL, CHAT_MISTRAL},
    };
    if (known)
        *known = false;
    if (jinja == NULL || jinja[0] == '\0')
        return CHAT_CHATML;
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
        if (strstr(jinja, rules[i].marker) && (rules[i].also == NULL || strstr(jinja, rules[i].also))) {
            if (known)
                *known = true;
            return rules[i].family;
        }
    }
    return CHAT_CHATML;
}

const char *chat_family_name(enum chat_family family)
{
    switch (family) {
    case CHAT_CHATML: return "chatml";
    case CHAT_LLAMA2: return "llama2";
    case CHAT_LLAMA3: return "llama3";
    case CHAT_MISTRAL: return "mistral";
    case CHAT_ZEPHYR: return "zephyr";
    case CHAT_GEMMA: return "gemma";
    }
    return "unknown";
}

/* ---- default system prompt ------------------------------------------------------------ */

/* Whether the text between "<|im_start|>system\n" and "<|im_end|>" is a plain literal
 * rather than Jinja code such as `' + messages[0]['content'] + '`. */
static bool is_plain_literal(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\'' && (i == 0 || s[i - 1] != '\\'))
            return false;
        if (s[i] == '"' && (i == 0 || s[i - 1] != '\\'))
            return false;
        if (s[i] == '{' || s[i] == '}')
            return false;
    }
    return true;
}

/* Copies s (n) undoing the Jinja string escapes \n \t \\ \' \". NULL on allocation
 * failure. */
static char *unescape(const char *s, size_t n)
{
    char *out = malloc(n + 1), *o = out;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n) {
            char c = s[++i];
            *o++ = c == 'n' ? '\n' : c == 't' ? '\t' : c;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

char *chat_template_default_system(const char *jinja)
{
    static const char head[] = "<|im_start|>system";
    if (jinja == NULL)
        return NULL;
    for (const char *p = strstr(jinja, head); p; p = strstr(p + 1, head)) {
        const char *text = p + sizeof head - 1;
        if (text[0] == '\n')
            text += 1;  /* a newline written as is in the literal (SmolLM2) */
        else if (text[0] == '\\' && text[1] == 'n')
            text += 2;  /* an escaped one (Qwen2) */
        else
            continue;
        const char *end = strstr(text, "<|im_end|>");
        if (end == NULL)
            return NULL;
        size_t n = (size_t)(end - text);
        if (n > 0 && is_plain_literal(text, n))
            return unescape(text, n);
    }
    return NULL;
}

/* ---- the families --------------------------------------------------------------------- */

/* ChatML (SmolLM2, Qwen2):
 *   {{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}
 *   {% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %} */
static void render_chatml(strbuf *b, const chat_message *msgs, size_t n, bool add_assistant)
{
    for (size_t i = 0; i < n; i++) {
        sb_add(b, "<|im_start|>");
        sb_add(b, msgs[i].role);
        sb_add(b, "\n");
        sb_add(b, msgs[i].content);
        sb_add(b, "<|im_end|>\n");
    }
    if (add_assistant)
        sb_add(b, "<|im_start|>assistant\n");
}

/* Llama 3 (the leading bos_token is left to the caller):
 *   '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'
 *       + message['content'] | trim + '<|eot_id|>'
 *   generation prompt: '<|start_header_id|>assistant<|end_header_id|>\n\n' */
static void render_llama3(strbuf *b, const chat_message *msgs, size_t n, bool add_assistant)
{
    for (size_t i = 0; i < n; i++) {
        sb_add(b, "<|start_header_id|>");
        sb_add(b, msgs[i].role);
        sb_add(b, "<|end_header_id|>\n\n");
        sb_add_trimmed(b, msgs[i].content);
        sb_add(b, "<|eot_id|>");
    }
    if (add_assistant)
        sb_add(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* Zephyr (rendered with trim_blocks, so only the newline after each message remains):
 *   '<|user|>\n' + message['content'] + eos_token   (likewise system, assistant)
 *   {% if loop.last and add_generation_prompt %}{{ '<|assistant|>' }}{% endif %} */
static void render_zephyr(strbuf *b, const chat_message *msgs, size_t n, bool add_assistant, const char *eos)
{
    for (size_t i = 0; i < n; i++) {
        sb_add(b, "<|");
        sb_add(b, msgs[i].role);
        sb_add(b, "|>\n");
        sb_add(b, msgs[i].content);
        sb_add(b, eos);
        sb_add(b, "\n");
    }
    if (add_assistant)
        sb_add(b, "<|assistant|>\n");
}

/* Gemma (Gemma 3's handling of a system message, which Gemma 1 and 2 reject):
 *   first_user_prefix = messages[0]['content'] + '\n\n'  when messages[0] is system
 *   '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "")
 *       + message['content'] | trim + '<end_of_turn>\n'     (role: assistant -> model)
 *   generation prompt: '<start_of_turn>model\n' */
static void render_gemma(strbuf *b, const chat_message *msgs, size_t n, bool add_assistant)
{
    size_t first = n > 0 && is_role(&msgs[0], "system") ? 1 : 0;
    for (size_t i = first; i < n; i++) {
        sb_add(b, "<start_of_turn>");
        sb_add(b, is_role(&msgs[i], "assistant") ? "model" : msgs[i].role);
        sb_add(b, "\n");
        if (first && i == first) {
            sb_add(b, msgs[0].content);
            sb_add(b, "\n\n");
        }
        sb_add_trimmed(b, msgs[i].content);
        sb_add(b, "<end_of_turn>\n");
    }
    if (first && n == 1) {  /* a lone system message: it still reaches the model */
        sb_add(b, "<start_of_turn>user\n");
        sb_add(b, msgs[0].content);
        sb_add(b, "\n\n<end_of_turn>\n");
    }
    if (add_assistant)
        sb_add(b, "<start_of_turn>model\n");
}

/* Llama 2:
 *   content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content']
 *             for the first message when there is a system message, else the content
 *   user:      bos_token + '[INST] ' + content.strip() + ' [/INST]'
 *   assistant: ' ' + content.strip() + ' ' + eos_token
 * The system message goes into the first user turn; BOS is written before every [INST]
 * except the one that opens the text. */
static void render_llama2(strbuf *b, const chat_message *msgs, size_t n, const char *bos, const char *eos)
{
    const char *system = n > 0 && is_role(&msgs[0], "system") ? msgs[0].content : NULL;
    size_t first = system ? 1 : 0;
    for (size_t i = first; i < n || system; i++) {
        bool pending_system = system != NULL;
        const char *content = i < n ? msgs[i].content : "";  /* past the end: a lone system */
        if (i < n && is_role(&msgs[i], "assistant")) {
            sb_add(b, " ");
            sb_add_trimmed(b, content);
            sb_add(b, " ");
            sb_add(b, eos);
            continue;
        }
        if (b->len > 0)
            sb_add(b, bos);
        sb_add(b, "[INST] ");
        if (pending_system) {
            /* strip() applies to the whole folded content: "<<SYS>>" has no leading
             * space to lose, so only the user text's trailing space goes. */
            strbuf folded = {0};
            sb_add(&folded, "<<SYS>>\n");
            sb_add(&folded, system);
            sb_add(&folded, "\n<</SYS>>\n\n");
            sb_add(&folded, content);
            if (folded.oom)
                b->oom = true;
            else
                sb_add_trimmed(b, folded.p);
            free(folded.p);
            system = NULL;
        } else {
            sb_add_trimmed(b, content);
        }
        sb_add(b, " [/INST]");
        if (i >= n)
            break;
    }
}

/* Mistral Instruct v0.1/v0.2 (the leading bos_token is left to the caller):
 *   user:      '[INST] ' + message['content'] + ' [/INST]'
 *   assistant: message['content'] + eos_token
 * with a leading system message folded into the first user message as
 * system + '\n\n' + content, as the later Mistral templates do. */
static void render_mistral(strbuf *b, const chat_message *msgs, size_t n, const char *eos)
{
    const char *system = n > 0 && is_role(&msgs[0], "system") ? msgs[0].content : NULL;
    size_t first = system ? 1 : 0;
    for (size_t i = first; i < n || system; i++) {
        if (i < n && is_role(&msgs[i], "assistant")) {
            sb_add(b, msgs[i].content);
            sb_add(b, eos);
            continue;
        }
        sb_add(b, "[INST] ");
        if (system) {
            sb_add(b, system);
            sb_add(b, "\n\n");
            system = NULL;
        }
        sb_add(b, i < n ? msgs[i].content : "");
        sb_add(b, " [/INST]");
        if (i >= n)
            break;
    }
}

/* ---- rendering ------------------------------------------------------------------------ */

char *chat_template_render(enum chat_family family, const chat_message *msgs, size_t n,
                           bool add_assistant, const char *bos, const char *eos)
{
    if (msgs == NULL && n > 0)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (msgs[i].role == NULL || msgs[i].content == NULL)
            return NULL;
    if (bos == NULL)
        bos = "<s>";
    if (eos == NULL)
        eos = "</s>";
    strbuf b = {0};
    switch (family) {
    case CHAT_LLAMA2: render_llama2(&b, msgs, n, bos, eos); break;
    case CHAT_LLAMA3: render_llama3(&b, msgs, n, add_assistant); break;
    case CHAT_MISTRAL: render_mistral(&b, msgs, n, eos); break;
    case CHAT_ZEPHYR: render_zephyr(&b, msgs, n, add_assistant, eos); break;
    case CHAT_GEMMA: render_gemma(&b, msgs, n, add_assistant); break;
    case CHAT_CHATML:
    default: render_chatml(&b, msgs, n, add_assistant); break;
    }
    return sb_finish(&b);
}
