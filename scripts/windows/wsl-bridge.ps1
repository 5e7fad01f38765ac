#Requires -Version 5.1
<#
.SYNOPSIS
Points Caddy on the Windows host at cap-server inside WSL2, at the VM's
current address, and reloads Caddy when that address has changed.

.DESCRIPTION
Tailscale Funnel runs on the Windows host and hands requests to Caddy on
127.0.0.1:3001; Caddy forwards them to cap-server in the WSL2 VM.  The VM's
address changes whenever WSL restarts, so this script:

  1. reads the VM's address (the first IPv4 address `hostname -I` prints in
     the distribution),
  2. rewrites the one line of the Caddyfile marked "# cap-upstream"
     ("to ADDRESS:PORT # cap-upstream"),
  3. validates the new file with `caddy validate` before it replaces the old
     one, and
  4. reloads Caddy through its admin API (`caddy reload`), or starts it with
     -StartCaddy when it is not running,
  5. checks GET /health through Caddy and says what to look at if
     cap-server does not answer.

When the address has not changed nothing is written and Caddy is not
reloaded, so the script can run as often as you like.  With -Register it
installs itself as a scheduled task that runs at logon (and, with
-RepeatMinutes, every N minutes), because the address changes on every
reboot.  docs/OPERATIONS.md, "The WSL2 bridge", describes the whole set-up.

Exit status: 0 on success (also when nothing changed), 1 on any error.

.PARAMETER CaddyFile
The Caddyfile to rewrite.  Default: %LOCALAPPDATA%\cap-server\Caddyfile,
where install-windows.ps1 puts it.

.PARAMETER Distro
The WSL distribution that runs cap-server.  Default: the default one.

.PARAMETER UpstreamPort
The port cap-server listens on inside WSL2.  Default: 3001.

.PARAMETER CaddyExe
caddy.exe, by name (looked up in PATH) or by path.  Default: caddy.

.PARAMETER StartCaddy
Start Caddy (`caddy run`, in the background, logging to caddy.log next to
the Caddyfile) when its admin API does not answer, instead of failing.  A
Caddy Windows service (install-windows.ps1 -CaddyService) is sturdier.

.PARAMETER Force
Write and reload even when the address has not changed.

.PARAMETER SkipHealthCheck
Do not check GET /health through Caddy afterwards.

.PARAMETER WaitSeconds
How long to wait for WSL2 to report an address (it may still be booting at
logon).  Default: 60.

.PARAMETER LogFile
Also append every message to this file (the scheduled task uses
%LOCALAPPDATA%\cap-server\wsl-bridge.log).

.PARAMETER Register
Register a scheduled task that runs this script, with the parameters given
here, at logon of the current user.

.PARAMETER RepeatMinutes
With -Register: also run every N minutes (0, the default: only at logon).

.PARAMETER Unregister
Remove the scheduled task.

.PARAMETER TaskName
The scheduled task's name.  Default: "cap-server WSL2 bridge".

.EXAMPLE
.\wsl-bridge.ps1
Updates the upstream of %LOCALAPPDATA%\cap-server\Caddyfile and reloads Caddy
if the WSL2 address changed.

.EXAMPLE
.\wsl-bridge.ps1 -Distro Debian -StartCaddy -Register -RepeatMinutes 10
Runs once now, then at every logon and every 10 minutes.

.EXAMPLE
.\wsl-bridge.ps1 -Unregister
Removes the scheduled task.
#>
[CmdletBinding(DefaultParameterSetName = 'Run')]
param(
    [string]$CaddyFile = (Join-Path $env:LOCALAPPDATA 'cap-server\Caddyfile'),
    [string]$Distro = '',
    [ValidateRange(1, 65535)]
    [int]$UpstreamPort = 3001,
    [string]$CaddyExe = 'caddy',
    [switch]$StartCaddy,
    [switch]$Force,
    [switch]$SkipHealthCheck,
    [ValidateRange(0, 600)]
    [int]$WaitSeconds = 60,
    [string]$LogFile = '',
    [Parameter(ParameterSetName = 'Register')]
    [switch]$Register,
    [Parameter(ParameterSetName = 'Register')]
    [ValidateRange(0, 1440)]
    [int]$RepeatMinutes = 0,
    [Parameter(ParameterSetName = 'Unregister')]
    [switch]$Unregister,
    [string]$TaskName = 'cap-server WSL2 bridge'
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

# .NET resolves relative paths against the process's directory, not
# PowerShell's current location: make them absolute once, here.
$CaddyFile = $ExecutionContext.SessionState.Path.GetUnresolvedProviderPathFromPSPath($CaddyFile)
if ($LogFile) { $LogFile = $ExecutionContext.SessionState.Path.GetUnresolvedProviderPathFromPSPath($LogFile) }

# The line this script owns.  test/integration/test_caddy.py applies the same
# pattern to the same file, so keep the two in step.
$UpstreamPattern = '(?m)^([ \t]*to[ \t]+)(\S+)([ \t]+#[ \t]*cap-upstream\b.*)$'

function Write-Log {
    param([Parameter(Mandatory = $true)][string]$Message, [switch]$Warn)
    $line = '{0} {1}' -f (Get-Date -Format 'yyyy-MM-ddTHH:mm:ssK'), $Message
    if ($Warn) { Write-Warning $Message } else { Write-Host $Message }
    if ($LogFile) {
        $dir = Split-Path -Parent $LogFile
        if ($dir -and -not (Test-Path -LiteralPath $dir)) {
            New-Item -ItemType Directory -Path $dir -Force | Out-Null
        }
        Add-Content -LiteralPath $LogFile -Value $line -Encoding UTF8
    }
}

function Resolve-Caddy {
    $cmd = Get-Command $CaddyExe -CommandType Application -ErrorAction SilentlyContinue |
        Select-Object -First 1
    if (-not $cmd) {
        throw "caddy not found ('$CaddyExe'). Install Caddy (for example: winget install --id CaddyServer.Caddy) or pass -CaddyExe C:\path\to\caddy.exe."
    }
    return $cmd.Source
}

# Runs caddy with the given arguments; returns @{ Code; Output }.
function Invoke-Caddy {
    param([Parameter(Mandatory = $true)][string]$Exe, [Parameter(Mandatory = $true)][string[]]$Arguments)
    # caddy logs on stderr; a native command's stderr must not count as a
    # PowerShell error here, only its exit status does.
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

function Get-WslAddress {
    $wsl = Get-Command 'wsl.exe' -CommandType Application -ErrorAction SilentlyContinue |
        Select-Object -First 1
    if (-not $wsl) { throw 'wsl.exe not found: WSL is not installed on this machine.' }
    $wslArgs = @()
    if ($Distro) { $wslArgs += @('-d', $Distro) }
    $wslArgs += @('-e', 'hostname', '-I')
    $deadline = (Get-Date).AddSeconds($WaitSeconds)
    while ($true) {
        $saved = $ErrorActionPreference
        $ErrorActionPreference = 'Continue'
        try {
            # wsl.exe writes its own messages in UTF-16; hostname's output is
            # plain ASCII.  Either way only an IPv4 address is taken below.
            $out = (& $wsl.Source @wslArgs 2>&1 | ForEach-Object { "$_" }) -join ' '
            $code = $LASTEXITCODE
        } finally {
            $ErrorActionPreference = $saved
        }
        if ($code -eq 0) {
            foreach ($word in ($out -split '\s+')) {
                $ip = $null
                if ($word -match '^\d{1,3}(\.\d{1,3}){3}$' -and
                    [System.Net.IPAddress]::TryParse($word, [ref]$ip)) {
                    return $word
                }
            }
        }
        if ((Get-Date) -ge $deadline) {
            $which = if ($Distro) { "distribution '$Distro'" } else { 'the default distribution' }
            $clean = ($out -replace "`0", '').Trim()
            throw "No IPv4 address from WSL ($which, exit $code): '$clean'. Is the distribution installed and its network up? (wsl -l -v)"
        }
        Start-Sleep -Seconds 2
    }
}

# Returns "host:port" of the admin API the Caddyfile names (Caddy's default
# is localhost:2019).
function Get-AdminAddress {
    param([string]$Text)
    $m = [regex]::Match($Text, '(?m)^[ \t]*admin[ \t]+(\S+)')
    if ($m.Success -and $m.Groups[1].Value -ne 'off') { return $m.Groups[1].Value }
    return 'localhost:2019'
}

function Test-Listening {
    param([string]$Address)
    $i = $Address.LastIndexOf(':')
    $hostPart = $Address.Substring(0, $i).Trim('[', ']')
    if ($hostPart -eq '' -or $hostPart -eq 'localhost') { $hostPart = '127.0.0.1' }
    $port = [int]$Address.Substring($i + 1)
    $client = New-Object System.Net.Sockets.TcpClient
    try {
        $task = $client.ConnectAsync($hostPart, $port)
        return ($task.Wait(2000) -and $client.Connected)
    } catch {
        return $false
    } finally {
        $client.Dispose()
    }
}

function Get-ListenPort {
    param([string]$Text)
    $m = [regex]::Match($Text, '(?m)^http://[^\s:]*:(\d+)')
    if ($m.Success) { return [int]$m.Groups[1].Value }
    return 3001
}

function Test-Health {
    param([int]$Port)
    $url = "http://127.0.0.1:$Port/health"
    try {
        $r = Invoke-WebRequest -Uri $url -UseBasicParsing -TimeoutSec 10
        Write-Log "Health through Caddy: $($r.StatusCode) $($r.Content)"
    } catch {
        Write-Log -Warn ("GET $url failed: $($_.Exception.Message). " +
            'Caddy is up but cap-server did not answer: in WSL check `systemctl status cap-server`, ' +
            'that it listens on 0.0.0.0 ("host" in /etc/cap-server/config.json), and ' +
            '`curl http://127.0.0.1:3001/health` inside WSL.')
    }
}

function Register-BridgeTask {
    $self = $PSCommandPath
    if (-not $self) { throw 'Cannot tell where this script is; run it as a file (-File).' }
    $caddyPath = Resolve-Caddy
    $log = if ($LogFile) { $LogFile } else { Join-Path (Split-Path -Parent $CaddyFile) 'wsl-bridge.log' }
    $argList = @('-NoProfile', '-NonInteractive', '-ExecutionPolicy', 'Bypass', '-WindowStyle', 'Hidden',
        '-File', "`"$self`"", '-CaddyFile', "`"$CaddyFile`"", '-UpstreamPort', "$UpstreamPort",
        '-CaddyExe', "`"$caddyPath`"", '-WaitSeconds', "$WaitSeconds", '-LogFile', "`"$log`"", '-StartCaddy')
    if ($Distro) { $argList += @('-Distro', "`"$Distro`"") }
    if ($SkipHealthCheck) { $argList += '-SkipHealthCheck' }
    $user = if ($env:USERDOMAIN) { "$env:USERDOMAIN\$env:USERNAME" } else { $env:USERNAME }
    $action = New-ScheduledTaskAction -Execute 'powershell.exe' -Argument ($argList -join ' ')
    $trigger = New-ScheduledTaskTrigger -AtLogOn -User $user
    if ($RepeatMinutes -gt 0) {
        # A logon trigger cannot say "repeat" itself; borrow the repetition
        # pattern of a one-off trigger (no duration: indefinitely).
        $every = New-ScheduledTaskTrigger -Once -At (Get-Date) -RepetitionInterval (New-TimeSpan -Minutes $RepeatMinutes)
        $trigger.Repetition = $every.Repetition
    }
    # WSL distributions belong to a user: the task runs as that user, only
    # while logged on, without elevation.
    $principal = New-ScheduledTaskPrincipal -UserId $user -LogonType Interactive -RunLevel Limited
    $settings = New-ScheduledTaskSettingsSet -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries `
        -MultipleInstances IgnoreNew -ExecutionTimeLimit (New-TimeSpan -Minutes 5)
    Register-ScheduledTask -TaskName $TaskName -Action $action -Trigger $trigger -Principal $principal `
        -Settings $settings -Description 'Points Caddy at cap-server in WSL2 (scripts\windows\wsl-bridge.ps1).' `
        -Force | Out-Null
    Write-Log "Registered scheduled task '$TaskName' for $user (at logon$(if ($RepeatMinutes -gt 0) { " and every $RepeatMinutes min" })); log: $log"
}

function Update-Bridge {
    if (-not (Test-Path -LiteralPath $CaddyFile -PathType Leaf)) {
        throw "Caddyfile not found: $CaddyFile. Copy packaging\caddy\Caddyfile there (install-windows.ps1 does) or pass -CaddyFile."
    }
    $caddy = Resolve-Caddy
    $text = [System.IO.File]::ReadAllText($CaddyFile)
    $found = [regex]::Matches($text, $UpstreamPattern)
    if ($found.Count -ne 1) {
        throw "Expected exactly one line 'to ADDRESS:PORT # cap-upstream' in $CaddyFile, found $($found.Count)."
    }
    $current = $found[0].Groups[2].Value
    $ip = Get-WslAddress
    $wanted = "${ip}:$UpstreamPort"
    $admin = Get-AdminAddress -Text $text
    $running = Test-Listening -Address $admin

    if ($current -eq $wanted -and -not $Force) {
        Write-Log "Upstream already $wanted; nothing to change."
        if (-not $running) {
            if (-not $StartCaddy) {
                throw "Caddy is not running (its admin API at $admin does not answer). Start its service, or rerun with -StartCaddy."
            }
            Start-CaddyNow -Exe $caddy -Admin $admin
        }
    } else {
        # Exactly one match: splice the new address in where the old one is,
        # leaving every other byte (line endings included) as it was.
        $g = $found[0].Groups[2]
        $new = $text.Substring(0, $g.Index) + $wanted + $text.Substring($g.Index + $g.Length)
        # Validate a copy first, so a bad file never replaces a good one.
        $tmp = "$CaddyFile.new"
        $utf8 = New-Object System.Text.UTF8Encoding($false)
        [System.IO.File]::WriteAllText($tmp, $new, $utf8)
        $v = Invoke-Caddy -Exe $caddy -Arguments @('validate', '--config', $tmp, '--adapter', 'caddyfile')
        if ($v.Code -ne 0) {
            Remove-Item -LiteralPath $tmp -Force
            throw "caddy validate refused the new Caddyfile (exit $($v.Code)):`n$($v.Output)"
        }
        [System.IO.File]::Copy($tmp, $CaddyFile, $true)
        [System.IO.File]::Delete($tmp)
        Write-Log "Upstream $current -> $wanted in $CaddyFile"
        if ($running) {
            $r = Invoke-Caddy -Exe $caddy -Arguments @('reload', '--config', $CaddyFile, '--adapter', 'caddyfile')
            if ($r.Code -ne 0) {
                throw "caddy reload failed (exit $($r.Code)); Caddy keeps its old configuration:`n$($r.Output)"
            }
            Write-Log "Caddy reloaded through $admin."
        } elseif ($StartCaddy) {
            Start-CaddyNow -Exe $caddy -Admin $admin
        } else {
            throw "Caddyfile updated, but Caddy is not running (its admin API at $admin does not answer). Start its service, or rerun with -StartCaddy."
        }
    }
    if (-not $SkipHealthCheck) { Test-Health -Port (Get-ListenPort -Text $text) }
}

# Starts `caddy run` in the background with its output in log files next
# to the Caddyfile, and waits for its admin API.  (`caddy start` is not used:
# its background child keeps the console pipes it inherited open, which
# would hold this script until Caddy exits.)
function Start-CaddyNow {
    param([string]$Exe, [string]$Admin)
    $dir = Split-Path -Parent $CaddyFile
    $p = Start-Process -FilePath $Exe -PassThru -WindowStyle Hidden `
        -ArgumentList @('run', '--config', "`"$CaddyFile`"", '--adapter', 'caddyfile') `
        -RedirectStandardOutput (Join-Path $dir 'caddy.out.log') `
        -RedirectStandardError (Join-Path $dir 'caddy.log')
    $deadline = (Get-Date).AddSeconds(15)
    while (-not (Test-Listening -Address $Admin)) {
        if ($p.HasExited) {
            throw "Caddy exited at once (exit $($p.ExitCode)); see $(Join-Path $dir 'caddy.log')."
        }
        if ((Get-Date) -ge $deadline) {
            throw "Caddy started (pid $($p.Id)) but its admin API at $Admin did not answer within 15 s; see $(Join-Path $dir 'caddy.log')."
        }
        Start-Sleep -Milliseconds 250
    }
    Write-Log "Caddy started (pid $($p.Id)); its log: $(Join-Path $dir 'caddy.log')."
}

try {
    if ($Unregister) {
        if (Get-ScheduledTask -TaskName $TaskName -ErrorAction SilentlyContinue) {
            Unregister-ScheduledTask -TaskName $TaskName -Confirm:$false
            Write-Log "Removed scheduled task '$TaskName'."
        } else {
            Write-Log "No scheduled task '$TaskName'; nothing to remove."
        }
        exit 0
    }
    Update-Bridge
    if ($Register) { Register-BridgeTask }
    exit 0
} catch {
    Write-Log -Warn "wsl-bridge: $($_.Exception.Message)"
    exit 1
}
