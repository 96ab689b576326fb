-- wrk: each request creates a new managed user u<k>, k unique across threads
-- (k = n * threads + thread id). Ids are then known to read.lua / query.lua.
-- thread_id is a global: setup() sets it in each thread's Lua state (a local would
-- shadow it).
local threads = {}
-- wrk calls request() once per thread before sending anything: start at -1 so the
-- first id actually sent is the offset itself.
local counter = -1
local nthreads = 1
local offset = 0
thread_id = 0

function setup(thread)
    thread:set("thread_id", #threads)
    table.insert(threads, thread)
end

function init(args)
    nthreads = tonumber(os.getenv("WRK_THREADS") or "2")
    offset = tonumber(os.getenv("ID_OFFSET") or "0")
end

request = function()
    local k = offset + counter * nthreads + thread_id
    counter = counter + 1
    local body = string.format(
        '{"userName":"user%d","givenName":"Given%d","sn":"Sn%d","mail":"user%d@example.com","accountStatus":"active"}',
        k, k, k, k)
    -- wrk.format replaces wrk.headers (the -H credentials) when given a table: merge them.
    local headers = {["Content-Type"] = "application/json", ["If-None-Match"] = "*"}
    for name, value in pairs(wrk.headers) do
        headers[name] = value
    end
    return wrk.format("PUT", "/openidm/managed/user/u" .. k, headers, body)
end

response = function(status, headers, body)
    if status ~= 201 then
        io.stderr:write("create: unexpected status " .. status .. " " .. body .. "\n")
    end
end
