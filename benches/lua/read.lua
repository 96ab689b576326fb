-- wrk: GET a random existing managed user u<k>, k in [0, N).
local n = 1
function init(args)
    n = tonumber(os.getenv("N") or "1")
    math.randomseed(os.time() + (tonumber(tostring({}):sub(8)) or 0))
end
request = function()
    return wrk.format("GET", "/openidm/managed/user/u" .. math.random(0, n - 1))
end
response = function(status, headers, body)
    if status ~= 200 then
        io.stderr:write("read: unexpected status " .. status .. "\n")
    end
end
