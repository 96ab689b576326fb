-- wrk: each request creates a new managed user u<k>, k unique across threads
-- (k = n * threads + thread id). Ids are then known to read.lua / query.lua.
local threads = {}
local counter = 0
local thread_id = 0
local nthreads = 1
local offset = 0

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
    return wrk.format("PUT", "/openidm/managed/user/u" .. k,
        {["Content-Type"] = "application/json", ["If-None-Match"] = "*"}, body)
end

response = function(status, headers, body)
    if status ~= 201 then
        io.stderr:write("create: unexpected status " .. status .. " " .. body .. "\n")
    end
end
