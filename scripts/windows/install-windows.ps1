#Requires -Version 5.1
<#
.SYNOPSIS
Sets up the Windows side of the WSL2 bridge: Caddy in front of cap-server in
WSL2, published by Tailscale Funnel.

.DESCRIPTION
Run from a checkout of the repository (or a copy of scripts\windows and
packaging\caddy), in PowerShell on the Windows host, as the user who owns
the WSL distribution.  It:

  1. checks that caddy.exe, tailscale.exe and wsl.exe are there, and says how
     to install what is missing (it installs nothing itself);
  2. copies packaging\caddy\Caddyfile to %LOCALAPPDATA%\cap-server\Caddyfile,
     unless a Caddyfile is already there (-Force replaces it);
  3. optionally (-CaddyService, needs an elevated prompt) registers Caddy as a
     Windows service that starts at boot;
  4. runs wsl-bridge.ps1 once (upstream = the WSL2 address, validate,
     reload or start Caddy, health check) and registers it as a scheduled
     task at logon, because the WSL2 address changes on every restart;
  5. optionally (-EnableFunnel) runs `tailscale funnel --bg 3001`, which
     publishes https://<machine>.<tailnet>.ts.net (port 443) to Caddy.

Running it again is safe: an existing Caddyfile is kept, the task and the
service are updated in place.  Inside WSL2, cap-server must listen on
0.0.0.0 and trust the Windows host as a proxy; the script prints the lines
to put into /etc/cap-server/config.json.

.PARAMETER ConfigDir
Where the Caddyfile and the logs live.  Default: %LOCALAPPDATA%\cap-server.

.PARAMETER Distro
The WSL distribution that runs cap-server.  Default: the default one.

.PARAMETER UpstreamPort
cap-server's port inside WSL2.  Default: 3001.

.PARAMETER CaddyExe
caddy.exe by name or path.  Default: caddy.

.PARAMETER CaddyService
Register Caddy as the Windows service "caddy" (automatic start).  Needs an
elevated PowerShell.  Without it, the scheduled task starts Caddy at logon.

.PARAMETER EnableFunnel
Run `tailscale funnel --bg 3001` at the end.

.PARAMETER RepeatMinutes
Also run the bridge task every N minutes (0: only at logon).  Default: 10,
so that a `wsl --shutdown` during the session is followed too.

.PARAMETER Force
Replace an existing Caddyfile with the packaged one.

.EXAMPLE
.\scripts\windows\install-windows.ps1 -Distro Debian -EnableFunnel

.EXAMPLE
.\scripts\windows\install-windows.ps1 -CaddyService -EnableFunnel
From an elevated prompt: Caddy runs as a service; the task only follows the
WSL2 address.
#>
[CmdletBinding()]
param(
    [string]$ConfigDir = (Join-Path $env:LOCALAPPDATA 'cap-server'),
    [string]$Distro = '',
    [ValidateRange(1, 65535)]
    [int]$UpstreamPort = 3001,
    [string]$CaddyExe = 'caddy',
    [switch]$CaddyService,
    [switch]$EnableFunnel,
    [ValidateRange(0, 1440)]
    [int]$RepeatMinutes = 10,
    [switch]$Force
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$ConfigDir = $ExecutionContext.SessionState.Path.GetUnresolvedProviderPathFromPSPath($ConfigDir)
$Bridge = Join-Path $PSScriptRoot 'wsl-bridge.ps1'
$Packaged = Join-Path $PSScriptRoot '..\..\packaging\caddy\Caddyfile'
$CaddyFile = Join-Path $ConfigDir 'Caddyfile'

function Find-Tool {
    param([string]$Name, [string]$Hint)
    $cmd = Get-Command $Name -CommandType Application -ErrorAction SilentlyContinue | Select-Object -First 1
    if (-not $cmd) { throw "$Name not found. $Hint" }
    return $cmd.Source
}

# Runs a native command; returns @{ Code; Output } and never lets its stderr
# count as a PowerShell error (only the exit status does).
function Invoke-Native {
    param([string]$Exe, [string[]]$Arguments)
    $saved = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'
    try {
        $out = & $Exe @Arguments 2>&1 | ForEach-Object { "$_" }
        $code = $LASTEXITCODE
    } finally {
        $ErrorActionPreference = $saved
    }
    return @{ Code = $code; Output = ($out -join [Environment]::NewLine) }
}

function Test-Elevated {
    $id = [Security.Principal.WindowsIdentity]::GetCurrent()
    return (New-Object Security.Principal.WindowsPrincipal($id)).IsInRole(
        [Security.Principal.WindowsBuiltInRole]::Administrator)
}

try {
    # 1. The tools.
    $caddy = Find-Tool -Name $CaddyExe -Hint 'Install Caddy (for example: winget install --id CaddyServer.Caddy) or pass -CaddyExe.'
    $tailscale = Find-Tool -Name 'tailscale.exe' -Hint 'Install Tailscale for Windows (for example: winget install --id Tailscale.Tailscale) and log in.'
    Find-Tool -Name 'wsl.exe' -Hint 'Install WSL2 (wsl --install) and a distribution that runs cap-server.' | Out-Null
    if (-not (Test-Path -LiteralPath $Bridge -PathType Leaf)) { throw "wsl-bridge.ps1 not found next to this script ($Bridge)." }
    Write-Host "caddy: $caddy"
    Write-Host "tailscale: $tailscale"

    # 2. The Caddyfile.
    if (-not (Test-Path -LiteralPath $ConfigDir)) { New-Item -ItemType Directory -Path $ConfigDir -Force | Out-Null }
    if ((Test-Path -LiteralPath $CaddyFile) -and -not $Force) {
        Write-Host "Keeping the existing $CaddyFile (-Force replaces it with the packaged one)."
    } else {
        if (-not (Test-Path -LiteralPath $Packaged -PathType Leaf)) { throw "The packaged Caddyfile is not at $Packaged." }
        # Byte for byte: no BOM, and the line endings as shipped.
        $source = (Resolve-Path -LiteralPath $Packaged).ProviderPath
        [System.IO.File]::WriteAllBytes($CaddyFile, [System.IO.File]::ReadAllBytes($source))
        Write-Host "Installed $CaddyFile."
    }

    # 3. Caddy as a service (optional).
    if ($CaddyService) {
        if (-not (Test-Elevated)) { throw '-CaddyService needs an elevated PowerShell (Run as administrator).' }
        # Caddy runs as a Windows service by itself when started by the
        # service manager; the service reads the same Caddyfile.  New-Service
        # and Win32_Service.Change take the command line as one string, so
        # the quotes inside it need no escaping for a native command.
        $bin = "`"$caddy`" run --config `"$CaddyFile`" --adapter caddyfile"
        $svc = Get-Service -Name 'caddy' -ErrorAction SilentlyContinue
        if ($svc) {
            $cim = Get-CimInstance -ClassName Win32_Service -Filter "Name='caddy'"
            $res = Invoke-CimMethod -InputObject $cim -MethodName Change -Arguments @{ PathName = $bin }
            if ($res.ReturnValue -ne 0) { throw "Could not update the caddy service (Win32_Service.Change returned $($res.ReturnValue))." }
            Set-Service -Name 'caddy' -StartupType Automatic
        } else {
            New-Service -Name 'caddy' -BinaryPathName $bin -StartupType Automatic `
                -DisplayName 'Caddy (cap-server WSL2 bridge)' | Out-Null
        }
        if ((Get-Service -Name 'caddy').Status -ne 'Running') { Start-Service -Name 'caddy' }
        Write-Host 'Caddy runs as the Windows service "caddy".'
    }

    # 4. The bridge, now and at every logon.
    $bridgeArgs = @{
        CaddyFile     = $CaddyFile
        UpstreamPort  = $UpstreamPort
        CaddyExe      = $caddy
        LogFile       = (Join-Path $ConfigDir 'wsl-bridge.log')
        Register      = $true
        RepeatMinutes = $RepeatMinutes
    }
    if ($Distro) { $bridgeArgs['Distro'] = $Distro }
    if (-not $CaddyService) { $bridgeArgs['StartCaddy'] = $true }
    # wsl-bridge.ps1 exits with its status; run it in its own process so
    # that its `exit` does not end this script.
    $argList = @('-NoProfile', '-ExecutionPolicy', 'Bypass', '-File', $Bridge)
    foreach ($k in $bridgeArgs.Keys) {
        $v = $bridgeArgs[$k]
        if ($v -is [bool]) { if ($v) { $argList += "-$k" } } else { $argList += @("-$k", "$v") }
    }
    # The same PowerShell that runs this script (Windows PowerShell or pwsh).
    $engine = (Get-Process -Id $PID).Path
    & $engine @argList
    if ($LASTEXITCODE -ne 0) { throw "wsl-bridge.ps1 failed (exit $LASTEXITCODE); see the messages above." }

    # 5. Funnel (optional).
    if ($EnableFunnel) {
        $r = Invoke-Native -Exe $tailscale -Arguments @('funnel', '--bg', '3001')
        if ($r.Code -ne 0) { throw "tailscale funnel failed (exit $($r.Code)): $($r.Output)" }
        Write-Host $r.Output
        $s = Invoke-Native -Exe $tailscale -Arguments @('funnel', 'status')
        Write-Host $s.Output
    } else {
        Write-Host 'Funnel not touched; publish the bridge with: tailscale funnel --bg 3001'
    }

    Write-Host ''
    Write-Host 'Inside WSL2, cap-server must accept the bridge.  In /etc/cap-server/config.json:'
    Write-Host '    "host": "0.0.0.0",'
    Write-Host '    "trusted_proxies": "127.0.0.0/8,::1,172.16.0.0/12"'
    Write-Host 'then: sudo systemctl restart cap-server   (see docs/OPERATIONS.md, "The WSL2 bridge").'
    exit 0
} catch {
    Write-Warning "install-windows: $($_.Exception.Message)"
    exit 1
}
