-- wrk: userName eq query for a random existing user.
local n = 1
function init(args)
    n = tonumber(os.getenv("N") or "1")
    math.randomseed(os.time() + (tonumber(tostring({}):sub(8)) or 0))
end
request = function()
    local k = math.random(0, n - 1)
    return wrk.format("GET", "/openidm/managed/user?_queryFilter=userName%20eq%20%22user" .. k .. "%22")
end
response = function(status, headers, body)
    if status ~= 200 or not string.find(body, '"resultCount":1', 1, true) then
        io.stderr:write("query: unexpected answer " .. status .. " " .. body .. "\n")
    end
end
