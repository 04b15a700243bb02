-- An editor session in a real, unmodified Neovim (0.7 or later), run by
-- cli/tests/lsp_nvim.rs as
--   nvim --headless -u init.lua main.weir -c "luafile session.lua"
-- where init.lua is docs/editors.md's Neovim 0.7-0.9 setup. Everything is
-- read the way an editor reads it (client.server_capabilities,
-- vim.diagnostic.get, buf_request_sync) and written to $WEIR_NVIM_OUT as
-- JSON; the Rust test judges it. Every wait is bounded.

local out = { steps = {} }
local buf = vim.api.nvim_get_current_buf()
local WAIT = 15000

local function step(name) table.insert(out.steps, name) end

-- 0-based line and column of the first `needle` in the buffer (ASCII).
local function find(needle, nth)
  nth = nth or 1
  for i, line in ipairs(vim.api.nvim_buf_get_lines(buf, 0, -1, false)) do
    local from = 1
    while true do
      local s = string.find(line, needle, from, true)
      if not s then break end
      nth = nth - 1
      if nth == 0 then return { line = i - 1, character = s - 1 } end
      from = s + 1
    end
  end
  error("not in buffer: " .. needle)
end

local function at(needle, nth)
  return { textDocument = { uri = vim.uri_from_bufnr(buf) }, position = find(needle, nth) }
end

-- The result of one request to the weir client (nil if none answered).
local function request(method, params)
  local res, err = vim.lsp.buf_request_sync(buf, method, params, WAIT)
  if err then error(method .. ": " .. tostring(err)) end
  for _, r in pairs(res or {}) do
    if r.err then error(method .. ": " .. vim.inspect(r.err)) end
    return r.result
  end
  return nil
end

local function client()
  for _, c in pairs(vim.lsp.buf_get_clients(buf)) do
    if c.name == "weir" then return c end
  end
end

local function diagnostics()
  local ds = {}
  for _, d in ipairs(vim.diagnostic.get(buf)) do
    table.insert(ds, {
      lnum = d.lnum, col = d.col, severity = d.severity,
      code = d.code, source = d.source, message = d.message,
    })
  end
  return ds
end

local function set_line(lnum, text)
  vim.api.nvim_buf_set_lines(buf, lnum, lnum + 1, false, { text })
end

local function main()
  -- Capabilities, as the client parsed them from `initialize`.
  local ok = vim.wait(WAIT, function()
    local c = client()
    return c ~= nil and c.server_capabilities ~= nil and not c.is_stopped()
      and c.initialized ~= false
  end, 20)
  if not ok then error("the weir client did not start") end
  local c = client()
  step("initialized")
  out.capabilities = c.server_capabilities
  out.root = c.config.root_dir

  -- An edit that breaks a name: the client sends didChange, the server
  -- publishes, vim.diagnostic shows it.
  local rule = find("from web").line
  local good = vim.api.nvim_buf_get_lines(buf, rule, rule + 1, false)[1]
  set_line(rule, (good:gsub("from web", "from webb")))
  out.diagnostics_appeared = vim.wait(WAIT, function()
    return #vim.diagnostic.get(buf) > 0
  end, 20)
  out.diagnostics = diagnostics()
  step("diagnostics")

  -- The quick fix for it, applied as `vim.lsp.buf.code_action` would.
  local d = vim.diagnostic.get(buf)[1]
  local lsp_diags = {}
  for _, x in ipairs(vim.diagnostic.get(buf)) do
    table.insert(lsp_diags, {
      range = {
        start = { line = x.lnum, character = x.col },
        ["end"] = { line = x.end_lnum, character = x.end_col },
      },
      severity = x.severity, code = x.code, source = x.source, message = x.message,
    })
  end
  local actions = request("textDocument/codeAction", {
    textDocument = { uri = vim.uri_from_bufnr(buf) },
    range = lsp_diags[1] and lsp_diags[1].range or { start = find("webb"), ["end"] = find("webb") },
    context = { diagnostics = lsp_diags },
  }) or {}
  out.code_actions = {}
  for _, a in ipairs(actions) do table.insert(out.code_actions, a.title) end
  step("code actions")
  if d and actions[1] and actions[1].edit then
    vim.lsp.util.apply_workspace_edit(actions[1].edit, c.offset_encoding or "utf-16")
  end
  out.fixed_line = vim.api.nvim_buf_get_lines(buf, rule, rule + 1, false)[1]
  out.diagnostics_cleared = vim.wait(WAIT, function()
    return #vim.diagnostic.get(buf) == 0
  end, 20)
  step("fix")

  -- Hover on a selector defined in the imported file.
  local hover = request("textDocument/hover", at("web", 1))
  out.hover = hover and hover.contents and (hover.contents.value or hover.contents) or vim.NIL
  step("hover")

  -- Definition and references of `web` across the import; other.weir is
  -- never opened.
  out.definition = request("textDocument/definition", at("web", 1)) or vim.NIL
  local p = at("web", 1)
  p.context = { includeDeclaration = true }
  out.references = request("textDocument/references", p) or {}
  step("navigation")

  -- Completion: label values after `app == `, peers after `from `.
  local function labels(params)
    local r = request("textDocument/completion", params) or {}
    local items = r.items or r
    local ls = {}
    for _, i in ipairs(items) do table.insert(ls, i.label) end
    return ls
  end
  out.completion_values = labels(at("\"api\""))
  out.completion_peers = labels(at("web", 1))
  step("completion")

  -- Formatting: a line indented badly comes back canonical.
  local applies = find("applies to").line
  set_line(applies, "          applies to api")
  local edits = request("textDocument/formatting", {
    textDocument = { uri = vim.uri_from_bufnr(buf) },
    options = { tabSize = 2, insertSpaces = true },
  }) or {}
  vim.lsp.util.apply_text_edits(edits, buf, c.offset_encoding or "utf-16")
  out.formatted = table.concat(vim.api.nvim_buf_get_lines(buf, 0, -1, false), "\n") .. "\n"
  step("formatting")

  -- Port names: an endpoint declaring `http` (tcp) and `dns` (udp), then
  -- completion after a rule's `tcp port "` and a service's
  -- `backends select … port "`, at the end of the line as typed.
  local last = vim.api.nvim_buf_line_count(buf)
  vim.api.nvim_buf_set_lines(buf, last, last, false, {
    'endpoint api-2 { labels { app: "api" } addr 10.1.1.6 ports { http: 8080/tcp, dns: 53/udp } }',
    "policy named priority 5 {",
    "  applies to api",
    "  ingress {",
    '    allow tcp port "',
    "  }",
    "}",
    "service api-svc {",
    "  frontend 10.96.0.1:80/tcp",
    '  backends select api port "',
    "}",
  })
  local function at_end(needle)
    local l = find(needle).line
    local text = vim.api.nvim_buf_get_lines(buf, l, l + 1, false)[1]
    return {
      textDocument = { uri = vim.uri_from_bufnr(buf) },
      position = { line = l, character = #text },
    }
  end
  out.completion_rule_ports = labels(at_end('allow tcp port "'))
  out.completion_backend_ports = labels(at_end('select api port "'))
  step("port names")
end

local ok, err = pcall(main)
if not ok then out.error = tostring(err) end
local f = assert(io.open(os.getenv("WEIR_NVIM_OUT"), "w"))
f:write(vim.fn.json_encode(out))
f:close()
vim.cmd("qa!")
