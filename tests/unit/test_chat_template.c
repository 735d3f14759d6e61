/* test_chat_template.c - chat template families (kernels/tokenizer/chat_template.h):
 *   - detection from the official Jinja templates (shortened where long) of SmolLM2,
 *     Qwen2, Llama 3, Gemma, Zephyr, Llama 2 and Mistral; unknown text falls back to
 *     ChatML with known = false;
 *   - the default system prompt found in ChatML templates (SmolLM2, Qwen2, Qwen2.5);
 *   - the exact text of a system + user + assistant + user conversation in every family,
 *     with and without the assistant header, matching what the Jinja templates render
 *     (without the leading BOS, which the caller adds as a token).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tokenizer/chat_template.h"

/* ---- templates, as found in tokenizer.chat_template ----------------------------------- */

/* SmolLM2-135M-Instruct's, byte for byte (real newlines inside the literals). */
static const char SMOLLM2[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}";

/* Qwen2's, with escaped newlines. */
static const char QWEN2[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/* Qwen2.5's shape: the first literal after "system\n" is code, the default comes later. */
static const char QWEN25[] =
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "{%- else %}\n"
    "    {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + "
    "'<|im_end|>' + '\\n' }}{%- endfor %}\n"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}\n";

static const char LLAMA3[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

static const char GEMMA[] =
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
    "supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}"
    "{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}";

static const char ZEPHYR[] =
    "{% for message in messages %}\n"
    "{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
    "{% endfor %}";

static const char LLAMA2[] =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
    "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set "
    "system_message = false %}{% endif %}{% for message in loop_messages %}{% if loop.index0 == 0 "
    "and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}"
    "{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + "
    "' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + "
    "eos_token }}{% endif %}{% endfor %}";

static const char MISTRAL[] =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}";

/* Alpaca-style: none of the markers. */
static const char ALPACA[] =
    "{% for message in messages %}{% if message['role'] == 'user' %}### Instruction:\n"
    "{{ message['content'] }}\n{% else %}### Response:\n{{ message['content'] }}\n{% endif %}"
    "{% endfor %}";

/* ---- detection ------------------------------------------------------------------------ */

static void check_detect(const char *jinja, enum chat_family want, bool want_known)
{
    bool known = !want_known;
    assert_int_equal(chat_template_detect(jinja, &known), want);
    assert_int_equal(known, want_known);
}

static void test_detect_families(void **state)
{
    (void)state;
    check_detect(SMOLLM2, CHAT_CHATML, true);
    check_detect(QWEN2, CHAT_CHATML, true);
    check_detect(QWEN25, CHAT_CHATML, true);
    check_detect(LLAMA3, CHAT_LLAMA3, true);
    check_detect(GEMMA, CHAT_GEMMA, true);
    check_detect(ZEPHYR, CHAT_ZEPHYR, true);
    check_detect(LLAMA2, CHAT_LLAMA2, true);
    check_detect(MISTRAL, CHAT_MISTRAL, true);
}

static void test_detect_unknown_falls_back_to_chatml(void **state)
{
    (void)state;
    check_detect(ALPACA, CHAT_CHATML, false);
    check_detect("", CHAT_CHATML, false);
    check_detect(NULL, CHAT_CHATML, false);
    assert_int_equal(chat_template_detect(LLAMA3, NULL), CHAT_LLAMA3);  /* known may be NULL */
}

static void test_family_names(void **state)
{
    (void)state;
    assert_string_equal(chat_family_name(CHAT_CHATML), "chatml");
    assert_string_equal(chat_family_name(CHAT_LLAMA2), "llama2");
    assert_string_equal(chat_family_name(CHAT_LLAMA3), "llama3");
    assert_string_equal(chat_family_name(CHAT_MISTRAL), "mistral");
    assert_string_equal(chat_family_name(CHAT_ZEPHYR), "zephyr");
    assert_string_equal(chat_family_name(CHAT_GEMMA), "gemma");
    assert_string_equal(chat_family_name((enum chat_family)99), "unknown");
}

/* ---- default system prompt ------------------------------------------------------------ */

static void check_default_system(const char *jinja, const char *want)
{
    char *got = chat_template_default_system(jinja);
    if (want == NULL) {
        assert_null(got);
        return;
    }
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_default_system(void **state)
{
    (void)state;
    check_default_system(SMOLLM2, "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    check_default_system(QWEN2, "You are a helpful assistant.");
    check_default_system(QWEN25, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
    check_default_system(LLAMA3, NULL);
    check_default_system(ALPACA, NULL);
    check_default_system(NULL, NULL);
}

/* ---- rendering ------------------------------------------------------------------------ */

static const chat_message CONVERSATION[] = {
    {"system", "You are terse."},
    {"user", "Hi there"},
    {"assistant", "Hello!"},
    {"user", "What is 2+2?"},
};

static void check_render(enum chat_family f, const chat_message *msgs, size_t n, bool add_assistant,
                         const char *bos, const char *eos, const char *want)
{
    char *got = chat_template_render(f, msgs, n, add_assistant, bos, eos);
    assert_non_null(got);
    if (strcmp(got, want) != 0)
        fail_msg("%s:\n got: [%s]\nwant: [%s]", chat_family_name(f), got, want);
    free(got);
}

/* The conversation with and without the assistant header, which is want_tail. */
static void check_both(enum chat_family f, const char *want_body, const char *want_tail)
{
    char with[1024];
    snprintf(with, sizeof with, "%s%s", want_body, want_tail);
    check_render(f, CONVERSATION, 4, false, "<s>", "</s>", want_body);
    check_render(f, CONVERSATION, 4, true, "<s>", "</s>", with);
}

static void test_render_chatml(void **state)
{
    (void)state;
    check_both(CHAT_CHATML,
               "<|im_start|>system\nYou are terse.<|im_end|>\n"
               "<|im_start|>user\nHi there<|im_end|>\n"
               "<|im_start|>assistant\nHello!<|im_end|>\n"
               "<|im_start|>user\nWhat is 2+2?<|im_end|>\n",
               "<|im_start|>assistant\n");
    /* Content is kept as is: no trimming in ChatML. */
    const chat_message m[] = {{"user", " spaced \n"}};
    check_render(CHAT_CHATML, m, 1, true, NULL, NULL,
                 "<|im_start|>user\n spaced \n<|im_end|>\n<|im_start|>assistant\n");
}

static void test_render_llama3(void **state)
{
    (void)state;
    check_both(CHAT_LLAMA3,
               "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>",
               "<|start_header_id|>assistant<|end_header_id|>\n\n");
    /* message['content'] | trim; no <|begin_of_text|>. */
    const chat_message m[] = {{"user", "  padded \n"}};
    check_render(CHAT_LLAMA3, m, 1, false, "<|begin_of_text|>", "<|eot_id|>",
                 "<|start_header_id|>user<|end_header_id|>\n\npadded<|eot_id|>");
}

static void test_render_gemma(void **state)
{
    (void)state;
    check_both(CHAT_GEMMA,
               "<start_of_turn>user\nYou are terse.\n\nHi there<end_of_turn>\n"
               "<start_of_turn>model\nHello!<end_of_turn>\n"
               "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n",
               "<start_of_turn>model\n");
    const chat_message m[] = {{"user", "Hi "}};
    check_render(CHAT_GEMMA, m, 1, true, "<bos>", "<eos>",
                 "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n");
}

static void test_render_zephyr(void **state)
{
    (void)state;
    check_both(CHAT_ZEPHYR,
               "<|system|>\nYou are terse.</s>\n"
               "<|user|>\nHi there</s>\n"
               "<|assistant|>\nHello!</s>\n"
               "<|user|>\nWhat is 2+2?</s>\n",
               "<|assistant|>\n");
}

static void test_render_llama2(void **state)
{
    (void)state;
    /* [/INST] already asks for the answer: add_assistant adds nothing. */
    check_both(CHAT_LLAMA2,
               "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi there [/INST] Hello! </s>"
               "<s>[INST] What is 2+2? [/INST]",
               "");
    /* Without a system message; content.strip(); NULL bos/eos mean "<s>" / "</s>". */
    const chat_message m[] = {{"user", " Hi "}, {"assistant", " Yo "}, {"user", "Bye"}};
    check_render(CHAT_LLAMA2, m, 3, true, NULL, NULL, "[INST] Hi [/INST] Yo </s><s>[INST] Bye [/INST]");
}

static void test_render_mistral(void **state)
{
    (void)state;
    check_both(CHAT_MISTRAL,
               "[INST] You are terse.\n\nHi there [/INST]Hello!</s>"
               "[INST] What is 2+2? [/INST]",
               "");
    const chat_message m[] = {{"user", "Hi"}};
    check_render(CHAT_MISTRAL, m, 1, false, "<s>", "</s>", "[INST] Hi [/INST]");
}

static void test_render_edge_cases(void **state)
{
    (void)state;
    /* No messages: just the assistant header, or an empty string. */
    check_render(CHAT_CHATML, NULL, 0, true, NULL, NULL, "<|im_start|>assistant\n");
    check_render(CHAT_LLAMA3, NULL, 0, false, NULL, NULL, "");
    /* A lone system message still reaches the model in the families that fold it. */
    const chat_message sys[] = {{"system", "Be brief."}};
    check_render(CHAT_LLAMA2, sys, 1, true, NULL, NULL, "[INST] <<SYS>>\nBe brief.\n<</SYS>> [/INST]");
    check_render(CHAT_MISTRAL, sys, 1, true, NULL, NULL, "[INST] Be brief.\n\n [/INST]");
    /* A NULL field is an error. */
    const chat_message bad[] = {{"user", NULL}};
    assert_null(chat_template_render(CHAT_CHATML, bad, 1, true, NULL, NULL));
    const chat_message bad_role[] = {{NULL, "x"}};
    assert_null(chat_template_render(CHAT_GEMMA, bad_role, 1, true, NULL, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect_families),
        cmocka_unit_test(test_detect_unknown_falls_back_to_chatml),
        cmocka_unit_test(test_family_names),
        cmocka_unit_test(test_default_system),
        cmocka_unit_test(test_render_chatml),
        cmocka_unit_test(test_render_llama3),
        cmocka_unit_test(test_render_gemma),
        cmocka_unit_test(test_render_zephyr),
        cmocka_unit_test(test_render_llama2),
        cmocka_unit_test(test_render_mistral),
        cmocka_unit_test(test_render_edge_cases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
